"""The papers' claims, written as paired comparisons of rows of a sweep's results table.

Each sweep's notebook has a claim set; ``mixseg-lite report`` and the notebooks settle them with
:func:`mixseg_lite.stats.settle` (paired differences over seeds, 95% interval, verdict).
"""

from __future__ import annotations

from mixseg_lite.stats import Claim


def _student(method: str) -> dict[str, str]:
    return {"method": method, "branch": "student"}


# REFERENCE A (Liu et al., MedIA 2023), notebook 02: every row is a (method, branch) pair.
MIXED_CLAIMS = [
    Claim("KL+Ent > KL (student)", _student("kl_ent"), _student("kl")),
    Claim("KL+Ent > Ent (student)", _student("kl_ent"), _student("ent")),
    Claim("entropy > pseudo-masks (student)", _student("kl_ent"), _student("pseudo")),
    Claim("student > teacher (KL+Ent)", _student("kl_ent"), {"method": "kl_ent", "branch": "teacher"}),
    Claim("student > lower bound (KL+Ent)", _student("kl_ent"), {"method": "lower_bound", "branch": "teacher"}),
    Claim("KL rescues the seed-only student", _student("kl"), _student("weak_only")),
    # What the weak labels buy over the same images without labels (semi-supervised rows)
    Claim("KL+Ent > Mean Teacher", _student("kl_ent"), {"method": "mean_teacher", "branch": "teacher"}),
    Claim("KL+Ent > CPS", _student("kl_ent"), {"method": "cps", "branch": "teacher"}),
    Claim("Mean Teacher > lower bound", {"method": "mean_teacher", "branch": "teacher"},
          {"method": "lower_bound", "branch": "teacher"}),
    Claim("CPS > lower bound", {"method": "cps", "branch": "teacher"}, {"method": "lower_bound", "branch": "teacher"}),
]

# Notebook 01: the collapse of entropy without KL, and entropy against pseudo-masks.
ENTROPY_CLAIMS = [
    Claim("KL+Ent > Ent (student)", _student("kl_ent"), _student("ent")),
    Claim("entropy > pseudo-masks (student)", _student("kl_ent"), _student("pseudo")),
    Claim("Ent alone over-segments (foreground fraction above KL+Ent's)", _student("ent"), _student("kl_ent"),
          metric="foreground_fraction"),
]


# The loss-weight balance sweep (experiments/mixed_balance_cardiac.yaml) against the KL-only student
# of the ablation sweep (lambda_ent = 0, same seeds, split and budget under our recipe).
BALANCE_WEIGHTS = [(10.0, 1.0), (10.0, 10.0), (1.0, 0.1), (1.0, 1.0)]
BALANCE_CLAIMS = [
    Claim(f"KL+Ent at lambda_kd {kd:g}, lambda_ent {ent:g} > KL alone",
          {**_student("kl_ent"), "lambda_kd": kd, "lambda_ent": ent}, {**_student("kl"), "recipe": "ours"})
    for kd, ent in BALANCE_WEIGHTS]


def cam_claims(modalities: tuple[str, ...] = ("T2", "FLAIR"),
               metrics: tuple[str, ...] = ("dice_3d", "dice_pos"), pairing: str | None = None) -> list[Claim]:
    """REFERENCE B (Patel & Dolz, MedIA 2022), notebook 03: the ablation's steps per modality.

    With ``pairing`` (e.g. ``"T1+T2"``, a column of ``results/cam_ablation_brain.csv``) the rows are
    those of that pairing at the weights chosen on validation data (``chosen`` True)."""
    steps = [("ER > CAM", "cam_er", "cam"), ("ER+CMER > ER", "cam_er_cmer", "cam_er"),
             ("method > ER+CMER", "cam_er_cmer_kl", "cam_er_cmer"), ("method > CAM", "cam_er_cmer_kl", "cam")]
    where = {"pairing": pairing, "chosen": True} if pairing else {}
    prefix = f"{pairing} " if pairing else ""
    return [Claim(f"{prefix}{m}: {name}", {"method": better, "modality": m, **where},
                  {"method": worse, "modality": m, **where}, metric)
            for metric in metrics for m in modalities for name, better, worse in steps]


CAM_PAIRINGS = (("T1", "T2"), ("T2", "FLAIR"))
"""The pairings of the CAM ablation (experiments/cam_ablation.py): the paper's default first."""
CAM_ABLATION_CLAIMS = [claim for pair in CAM_PAIRINGS for claim in cam_claims(pair, pairing="+".join(pair))]


CLAIMS_BY_NOTEBOOK = {
    "01_entropy_vs_pseudomask": ENTROPY_CLAIMS,
    "02_kl_distillation": MIXED_CLAIMS,
    "03_cam_equivariance": cam_claims(),
}
