"""How a Kubeflow Pipelines task hands on "no model".

A KFP task always produces the outputs it declares, so the PushedBaseline component
(`pushed_baseline.py`) says "no baseline" with an empty Model artifact whose custom property
`PROPERTY` is 1, and the image's entrypoint (`pipelines/cloud/kfp_entrypoint.py`) leaves such an
input artifact out, as a resolver that found nothing would. No TFX imports here: the
entrypoint imports this module in every task, where each import costs seconds.
"""

PROPERTY = "no_model"
