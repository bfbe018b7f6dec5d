"""What an annotation server needs, without MONAI Label: annotators' labels, the model folder with
its published versions, the regression gate and fine-tuning behind it."""
