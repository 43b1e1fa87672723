"""Vocabulary of the synthetic set: colours, shapes, motions, backgrounds, caption and question templates."""
from __future__ import annotations

COLOURS: dict[str, tuple[int, int, int]] = {"red": (230, 30, 30), "green": (30, 200, 50), "blue": (30, 70, 240),
                                             "yellow": (240, 220, 20), "purple": (150, 40, 210),
                                             "orange": (250, 130, 10)}
COLOUR_WORDS: dict[str, list[str]] = {
    "red": ["red", "crimson", "scarlet"], "green": ["green", "emerald", "lime"], "blue": ["blue", "azure", "cobalt"],
    "yellow": ["yellow", "golden", "lemon"], "purple": ["purple", "violet", "amethyst"],
    "orange": ["orange", "amber", "tangerine"]}
SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "disc", "ball", "round shape", "dot"],
    "square": ["square", "box", "block", "square shape"],
    "triangle": ["triangle", "wedge", "three-sided shape", "triangular shape"],
    "star": ["star", "star shape", "five-pointed star", "starlike shape"]}
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# (third person, gerund) verbs and the path phrases that can follow them, per direction.
_HORIZONTAL = [("moves", "moving"), ("slides", "sliding"), ("travels", "traveling"),
               ("drifts", "drifting"), ("glides", "gliding")]
MOTION_VERBS: dict[str, list[tuple[str, str]]] = {"left": _HORIZONTAL, "right": _HORIZONTAL, "up": [
    ("moves", "moving"), ("rises", "rising"), ("travels", "traveling"), ("floats", "floating"), ("climbs", "climbing")],
    "down": [("moves", "moving"), ("falls", "falling"), ("sinks", "sinking"), ("drops", "dropping"),
             ("travels", "traveling")]}
MOTION_PATHS: dict[str, list[str]] = {
    "left": ["to the left", "left", "leftward", "towards the left side", "from right to left"],
    "right": ["to the right", "right", "rightward", "towards the right side", "from left to right"],
    "up": ["up", "upward", "upwards", "towards the top", "from bottom to top"],
    "down": ["down", "downward", "downwards", "towards the bottom", "from top to bottom"]}
BACKGROUND_WORDS: dict[str, list[str]] = {
    "noise": ["a mottled grey background", "a noisy background"],
    "stripes": ["a striped background", "grey stripes"],
    "checker": ["a checkered background", "a grey checkerboard"],
    "gradient": ["a gradient background", "a shaded grey background"]}
CAPTION_TEMPLATES = [  # a: article, c: colour, s: shape, v/g: verb/gerund, p: path, adj: direction
    "{a} {c} {s} {v} {p}", "the {c} {s} {v} {p}", "{adj} motion of {a} {c} {s}",
    "there is {a} {c} {s} that {v} {p}", "{a} {c} {s} is {g} {p}", "we see {a} {c} {s} {g} {p}",
    "{a} {c} {s} can be seen {g} {p}", "{c} {s} {g} {p}", "{a} {c} {s} keeps {g} {p}"]
DIRECTION_ADJECTIVES = {"left": "leftward", "right": "rightward", "up": "upward", "down": "downward"}
# Question phrasings per asked attribute; categories: 0 what, 2 how (as in MSRVTT-QA).
QUESTION_TEMPLATES: dict[str, list[str]] = {
    "colour": ["what color is the moving shape?", "what colour is the {s}?",
               "what is the color of the object that moves {d}?", "which color does the {s} have?"],
    "shape": ["what shape is moving?", "what shape is the {c} object?",
              "what kind of shape moves {d}?", "what is the {c} thing?"],
    "direction": ["which way does the {c} {s} move?", "how does the shape move?",
                  "in which direction does the {s} travel?", "how does the {c} object move?"],
    "count": ["how many shapes are there?", "how many objects are in the video?", "how many shapes can be seen?"]}
QA_CATEGORY = {"colour": 0, "shape": 0, "direction": 2, "count": 2}
