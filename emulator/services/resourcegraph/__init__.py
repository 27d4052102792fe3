"""Azure Resource Graph: the `resources` query endpoint over the ARM model's resources."""
