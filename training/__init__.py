"""Myna pre-training and fine-tuning: the accelerate entry point, its arguments, data and contrastive losses;
`finetune.py`; the ablation runner. The generated corpus lives in `myna_common.synthetic` (re-exported here as
`myna_training.synthetic`).

Kept free of imports so that `import myna_training.synthetic` stays light (numpy only, no accelerate or torch).
"""
