"""IMDB sentiment: data, model, training."""
