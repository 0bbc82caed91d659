"""The shapes world: a synthetic, seeded stand-in for CLIP pretraining and a shifted downstream task."""
