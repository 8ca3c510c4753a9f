"""Training: recurrent PPO from trajectory shards replayed through the lake."""
