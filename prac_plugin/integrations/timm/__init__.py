"""prac_plugin inside timm: the train.py hook, sample ids through timm's data pipeline, tasks, Hub export, patches."""
