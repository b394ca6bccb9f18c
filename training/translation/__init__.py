"""Multi30k translation: data, subwords, attention seq2seq, training, evaluation."""
