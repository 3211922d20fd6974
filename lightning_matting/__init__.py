"""Video matting (BackgroundMattingV2, RobustVideoMatting) through PyTorch Lightning, written to video."""
