"""Born-Again Networks (Furlanello, Lipton, Tschannen, Itti & Anandkumar, ICML 2018).

A student with the teacher's own architecture is trained to match the teacher's output distribution
as well as the labels, with no temperature (Sec. 3, the "BAN" objective with the label term added):

    L = CE(y, softmax(s)) + KL(softmax(t) || softmax(s))

Generations are chained by the experiment layer, not here: generation m's single teacher is the
trained network of generation m-1 (FEED Table 4's BAN rows, Stack-1..Stack-5). The method itself is
KD with T = 1 and weight 1.
"""
from __future__ import annotations

from .base import METHODS, Hyper
from .kd import KD


@METHODS.register("ban")
class BAN(KD):
    """KD with T = 1 and unit weight; exactly one teacher (the previous generation)."""

    name = "ban"
    paper = ("Furlanello, Lipton, Tschannen, Itti & Anandkumar, 'Born-Again Neural Networks', ICML 2018")
    equation = "Sec. 3: L = CE(y, softmax(s)) + KL(softmax(t) || softmax(s)); generation m learns from generation m-1"
    max_teachers = 1
    defaults = {
        "temperature": Hyper(1.0, "paper", "Sec. 3: the student matches the teacher's output distribution, its "
                                           "plain softmax (no temperature)"),
        "weight": Hyper(1.0, "assumed", "the teacher term's weight beside the label term; BAN's Sec. 3 writes the "
                                        "objective as matching the teacher, and the weight of an added label term "
                                        "is not stated there (FEED's BAN baseline settings were not read): 1, "
                                        "the two added unweighted"),
    }
