"""Factor Transfer (Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression via Factor
Transfer", NeurIPS 2018).

Two stages (Sec. 3):

1. "paraphraser": a convolutional autoencoder P on the teacher's final feature map x is trained to
   reconstruct it, L_rec = ||x - P(x)|| (Eq. 1). Its encoder's output, with k*C channels (the
   paraphrase rate k = 0.5), is the teacher factor F_T.
2. "train": the paraphraser is frozen; the student and a translator (three conv layers on the
   student's final feature map) are trained together with (Eq. 2-3)

       L = CE(y, softmax(s)) + beta * || F_T/||F_T||_2 - F_S/||F_S||_2 ||_1 ,  F_S = translator(x_S).

With N teachers (FEED Table 2's "5xFT") each teacher has its own paraphraser and translator, and the
student gets one factor term per teacher, summed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import factor_loss, reconstruction_loss
from .base import METHODS, Hyper, Stage, StepContext
from .feature_distiller import FeatureDistiller


def _conv_stack(channels: list[int], conv=nn.Conv2d) -> nn.Sequential:
    """3x3, stride-1 convolutions channels[0] -> channels[1] -> ..., each followed by LeakyReLU(0.1)."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [conv(c_in, c_out, kernel_size=3, stride=1, padding=1), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Encoder C -> C -> F -> F (convs) and decoder F -> F -> C -> C (transposed convs)."""

    def __init__(self, channels: int, factor_channels: int):
        super().__init__()
        self.encoder = _conv_stack([channels, channels, factor_channels, factor_channels])
        self.decoder = _conv_stack([factor_channels, factor_channels, channels, channels], nn.ConvTranspose2d)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class Translator(nn.Sequential):
    """Student feature (C_s channels) -> factor (F channels): convs C_s -> C_s -> F -> F."""

    def __init__(self, channels: int, factor_channels: int):
        super().__init__(*_conv_stack([channels, channels, factor_channels, factor_channels]))


def factor_channels(channels: int, rate: float) -> int:
    return max(1, int(round(channels * rate)))


@METHODS.register("ft")
class FT(FeatureDistiller):
    """Stages "paraphraser" (trains `paraphrasers`, loss `loss_rec`) and "train" (trains `student` and
    `translators`, losses `loss_ce`, `loss_ft`)."""

    name = "ft"
    paper = ("Kim, Park & Kwak, 'Paraphrasing Complex Network: Network Compression via Factor Transfer', "
             "NeurIPS 2018")
    equation = ("Eq. 1: L_rec = ||x - P(x)||; Eq. 3: L = CE + beta * ||F_T/||F_T||_2 - F_S/||F_S||_2||_1 "
                "with F_T = P_enc(x_T), F_S = translator(x_S)")
    stage_names = ("paraphraser", "train")
    min_teachers = 1
    defaults = {
        "beta": Hyper(500.0, "code", "the authors' train_student.py default, for a mean-reduced L1"),
        "rate": Hyper(0.5, "code", "paraphrase rate k: factor channels = k * teacher channels; 0.5 is the "
                                   "default of the authors' train_Paraphraser.py / train_student.py ('--rate', "
                                   "'The paraphrase rate k'); where the paper states it was not read"),
        "rec_p": Hyper(1, "code", "reconstruction norm: the paper writes ||x - P(x)||^2, the released "
                                  "code trains with nn.L1Loss (p = 1); p = 2 gives the squared form"),
    }
    deviations = (
        "Paraphraser and translator follow the authors' released code: 3x3 convolutions (transposed in "
        "the decoder) with LeakyReLU(0.1) and no batch normalisation.",
        "Several teachers (FEED's 5xFT): one paraphraser and one translator per teacher, factor terms summed.",
    )

    def __init__(self, student, teachers=(), num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        if not 0 < self.hp["rate"] <= 4:
            raise ConfigError(f"ft: rate must be in (0, 4], got {self.hp['rate']!r}")
        if self.hp["rec_p"] not in (1, 2):
            raise ConfigError(f"ft: rec_p must be 1 or 2, got {self.hp['rec_p']!r}")
        self.tap_features(["final"])
        s = self.student_shapes["final"]
        paraphrasers, translators = [], []
        for i, shapes in enumerate(self.teacher_shapes):
            t = shapes["final"]
            if t[1:] != s[1:]:
                raise ConfigError(f"ft: the student's final feature map is {tuple(s[1:])} pixels but teacher "
                                  f"{i + 1}'s is {tuple(t[1:])}; factor transfer needs equal spatial sizes")
            k = factor_channels(t[0], self.hp["rate"])
            paraphrasers.append(Paraphraser(t[0], k))
            translators.append(Translator(s[0], k))
        self.paraphrasers = nn.ModuleList(paraphrasers)
        self.translators = nn.ModuleList(translators)

    def stages(self) -> list[Stage]:
        return [Stage("paraphraser", trains=("paraphrasers",), losses=("loss_rec",)),
                Stage("train", trains=("student", "translators"), losses=("loss_ce", "loss_ft"))]

    def trainable_groups(self) -> dict[str, nn.Module]:
        return {"student": self.student, "paraphrasers": self.paraphrasers, "translators": self.translators}

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        teachers = self.teacher_forwards(images)
        if ctx.stage.name == "paraphraser":
            # No student is trained here; the logits handed back are the first teacher's.
            rec = sum(reconstruction_loss(p(t_feats["final"]), t_feats["final"], self.hp["rec_p"])
                      for p, (_, t_feats) in zip(self.paraphrasers, teachers))
            return teachers[0][0], {"loss_rec": rec}
        logits, feats = self.student_forward(images)
        total = 0.0
        for para, trans, (_, t_feats) in zip(self.paraphrasers, self.translators, teachers):
            with torch.no_grad():  # the paraphraser is frozen in this stage: F_T is a constant
                teacher_factor = para.encoder(t_feats["final"])
            total = total + factor_loss(trans(feats["final"]), teacher_factor)
        return logits, {"loss_ce": F.cross_entropy(logits, targets), "loss_ft": self.hp["beta"] * total}
