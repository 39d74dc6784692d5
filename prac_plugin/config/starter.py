"""The starter recipe: LeNet-300-100 on the embedded digits, one schedule for the quick start and every example."""

# recipes/quickstart.yaml is this recipe (a test keeps them equal)
QUICKSTART_RECIPE = {
    "model": {"name": "lenet_300_100", "kwargs": {"img_size": 8}},
    "data": {"path": "builtin:digits", "val_fraction": 0.1, "split_seed": 0},
    "train": {"epochs": 15, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0001,
              "schedule": "cosine", "seed": 0},
    "ticket": {"strategy": "ltr", "levels": 20, "fraction": 0.2, "scope": "global", "ignore": ["fc"], "rewind": "1ep"},
    "data_selection": {"strategy": "full"},
}
