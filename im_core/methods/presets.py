"""Self-training methods as compositions of steps, run side by side by a comparison (comparisons.py).

A method is a small set of settings merged onto a base experiment: which labels stage 0 sees,
which builder makes the pseudo-labels, which trainer the students use and how they are laid out
(stages.py: from scratch, or continuing a parent on L, P or a mix; GIST's beam, RIST's paths),
whether Noisy Student's growing width and noise apply, and which stage-0 models it starts from.
Adding a method is one entry here and its label.
"""
from __future__ import annotations

# start: the baseline whose gen0 models a self-training method starts from
METHODS: dict[str, dict] = {
    "fdt": {"generations": 0, "stage0": {"labels": "all"}},
    "cct": {"generations": 0, "stage0": {"trainer": "cct"}},
    "cct_im": {"start": "cct", "pseudo_labels": {"builder": "im"}},
    "ldt": {"generations": 0},
    # LDT trained to its validation plateau rather than for gen0's fixed steps: up to
    # PLATEAU_BUDGET times that budget, ending once `patience` validations in a row bring no new
    # best, so that a self-training method's gain over LDT is not a gain over a short schedule
    "ldt_plateau": {"generations": 0, "train": {"patience": 8}},
    # continuous weak-to-strong trainers (trainers/fixmatch.py, unimatch.py, unimatch_v2.py) as
    # baselines, and IM's generations on top of UniMatch: teachers from UniMatch with supervised
    # students; with UniMatch students (the IM pairs in the labeled batch, the unlabeled stream
    # beside them); and the same with the teachers' IM also ignored in the unlabeled loss (online)
    "fixmatch": {"generations": 0, "stage0": {"trainer": "fixmatch"}},
    "unimatch": {"generations": 0, "stage0": {"trainer": "unimatch"}},
    "unimatch_v2": {"generations": 0, "stage0": {"trainer": "unimatch_v2"}},
    "unimatch_im": {"start": "unimatch", "pseudo_labels": {"builder": "im"}},
    "unimatch_im_unimatch": {"start": "unimatch", "pseudo_labels": {"builder": "im"},
                             "students": {"trainer": "unimatch"}},
    "unimatch_im_online": {"start": "unimatch", "pseudo_labels": {"builder": "im"},
                           "students": {"trainer": "unimatch", "continuous": {"im_online": True}}},
    "aldt": {"generations": 0, "train": {"labeled_copies": 9}},
    "model_ensemble": {"start": "ldt", "pseudo_labels": {"builder": "model_ensemble"}},
    "input_ensemble": {"start": "ldt", "pseudo_labels": {"builder": "input_ensemble"}},
    "noisy_student": {"start": "ldt", "pseudo_labels": {"builder": "best_teacher"}, "noisy_student": {"enabled": True}},
    "consistency": {"start": "ldt", "pseudo_labels": {"builder": "none"}, "students": {"trainer": "consistency"}},
    "im": {"start": "ldt", "pseudo_labels": {"builder": "im"}},
    # the continued-training control: each generation continues the previous generation's model
    # of the same index on the labeled images alone, for the students' steps; a self-training
    # method's gain is credited to the unlabeled images only above it
    "ldt_continued": {"start": "ldt", "pseudo_labels": {"builder": "none"},
                      "students": {"init": "parent", "parent": "same_index"}},
    "im_plus": {"start": "ldt", "pseudo_labels": {"builder": "im"}, "noisy_student": {"enabled": True}},
    "aim_plus": {"start": "aldt", "train": {"labeled_copies": 9}, "pseudo_labels": {"builder": "im"},
                 "noisy_student": {"enabled": True}},
    # stages that continue from a parent (stages.py): one path with a fixed share of ground truth
    # in every batch; GIST's beam over L/P; RIST's random L/P paths; the last two with the previous
    # stage's IM (its top-n: the beam's members, all paths) as the P stages' pseudo-labels
    "fist": {"start": "ldt", "pseudo_labels": {"builder": "parent"}, "selection": {"top_k": 1},
             "students": {"models": 1, "init": "parent", "parent": "best", "labeled_share": 0.5}},
    "gist": {"start": "ldt", "pseudo_labels": {"builder": "parent"}, "students": {"search": "beam", "beam_width": 2}},
    "rist": {"start": "ldt", "pseudo_labels": {"builder": "parent"}, "students": {"search": "random", "paths": 3}},
    "gist_im": {"start": "ldt", "pseudo_labels": {"builder": "im", "teachers": 2}, "selection": {"top_k": 2},
                "students": {"search": "beam", "beam_width": 2}},
    "rist_im": {"start": "ldt", "pseudo_labels": {"builder": "im", "teachers": 3}, "selection": {"top_k": 3},
                "students": {"search": "random", "paths": 3}},
    # DST-CBC's rounds (Table 5a's ablation): each round fine-tunes the best model so far on half
    # ground truth, half pseudo-labels of that model; st: every pixel, plain cross-entropy; dst:
    # the dynamic loss; dst_cbc: its class-balanced curriculum; dst_cbc_im: inside the agreement
    # of the previous round's top 2
    "st": {"start": "ldt", "pseudo_labels": {"builder": "class_balanced", "ratios": [1.0]}, "selection": {"top_k": 1},
           "students": {"models": 1, "init": "parent", "parent": "best_so_far", "labeled_share": 0.5}},
    "dst": {"start": "ldt", "pseudo_labels": {"builder": "class_balanced", "ratios": [1.0]}, "selection": {"top_k": 1},
            "students": {"models": 1, "init": "parent", "parent": "best_so_far", "labeled_share": 0.5,
                         "dynamic_gamma": 9}},
    "dst_cbc": {"start": "ldt", "pseudo_labels": {"builder": "class_balanced"}, "selection": {"top_k": 1},
                "students": {"models": 1, "init": "parent", "parent": "best_so_far", "labeled_share": 0.5,
                             "dynamic_gamma": 9}},
    "dst_cbc_im": {"start": "ldt", "pseudo_labels": {"builder": "class_balanced", "agreement": True, "teachers": 2},
                   "selection": {"top_k": 2},
                   "students": {"models": 2, "init": "parent", "parent": "best_so_far", "labeled_share": 0.5,
                                "dynamic_gamma": 9}},
}
BASELINES = ("fdt", "ldt", "ldt_plateau", "aldt", "cct", "fixmatch", "unimatch", "unimatch_v2")
# gen0 sets as large as the students' (all training labels; ten times the labeled set) train with
# the students' budget, as an epoch budget gives them in the authors' code
STUDENT_BUDGET = ("fdt", "aldt", "aim_plus")
# gen0 sets trained to their plateau: at most this many times the base's gen0 steps (or epochs)
PLATEAU_BUDGET = {"ldt_plateau": 10}
LABELS = {"fdt": "FDT", "ldt": "LDT", "ldt_plateau": "LDT to its plateau", "aldt": "ALDT", "cct": "CCT", "cct_im": "IM from CCT", "model_ensemble": "Model Ensemble",
          "input_ensemble": "Input Ensemble", "noisy_student": "Noisy Student", "consistency": "Consistency Loss",
          "im": "IM", "ldt_continued": "LDT continued", "im_plus": "IM+", "aim_plus": "AIM+", "fist": "FIST", "gist": "GIST", "rist": "RIST",
          "gist_im": "GIST+IM", "rist_im": "RIST+IM", "st": "ST", "dst": "DST", "dst_cbc": "DST-CBC",
          "dst_cbc_im": "DST-CBC+IM", "fixmatch": "FixMatch", "unimatch": "UniMatch", "unimatch_v2": "UniMatch V2",
          "unimatch_im": "IM from UniMatch", "unimatch_im_unimatch": "IM from UniMatch, UniMatch students",
          "unimatch_im_online": "IM online (UniMatch students)"}
