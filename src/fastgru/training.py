"""The training API (issue 5): models, layers, losses, optimizers, callbacks, data and text
tools, re-exported at the top level (`fastgru.Sequential`, `fastgru.TextClassifier`, ...).

    model = fastgru.TextClassifier(vocab_size=len(vocab), vocab=vocab, seed=0)
    model.fit(x, y, epochs=5, batch_size=64, validation_data=(x_val, y_val))

See docs/training.md for the tour.
"""
from fastgru import metrics  # noqa: F401  (fastgru.metrics.AUC, Precision, ...)
from fastgru.callbacks import (
                               BackupAndRestore,
                               Callback,
                               CSVLogger,
                               EarlyStopping,
                               History,
                               LambdaCallback,
                               LearningRateScheduler,
                               ModelCheckpoint,
                               ReduceLROnPlateau,
)
from fastgru.checkpoint import CheckpointError
from fastgru.data import (
                               DataError,
                               Dataset,
                               encode_labels,
                               length_batches,
                               lm_windows,
                               load_aclimdb,
                               load_delimited,
                               load_digits_sequences,
                               load_imdb_npz,
                               load_mr,
                               make_noisy_sine,
                               make_pattern_text,
                               make_sentiment_texts,
                               stratified_split,
)
from fastgru.losses import BinaryCrossentropy, CategoricalCrossentropy, MeanSquaredError
from fastgru.models import (
                               LanguageModel,
                               SequenceClassifier,
                               SequenceRegressor,
                               Sequential,
                               TextClassifier,
                               load_model,
)
from fastgru.nn import (
                               Activation,
                               Dense,
                               Dropout,
                               Embedding,
                               GlobalAveragePooling1D,
                               GlobalMaxPooling1D,
                               LastState,
                               TimePooling,
)
from fastgru.optim import (
                               SGD,
                               Adam,
                               AdamW,
                               CosineDecay,
                               LearningRateSchedule,
                               RMSprop,
                               StepDecay,
                               clip_grad_norm,
)
from fastgru.plotting import plot_history
from fastgru.text import Tokenizer, Vocabulary, pad_sequences
from fastgru.trainer import VerificationError

__all__ = [
    # models
    "Sequential", "TextClassifier", "SequenceClassifier", "SequenceRegressor", "LanguageModel",
    "load_model",
    # layers
    "Embedding", "Dense", "Activation", "Dropout", "TimePooling", "LastState",
    "GlobalAveragePooling1D", "GlobalMaxPooling1D",
    # losses, optimizers, schedules
    "BinaryCrossentropy", "CategoricalCrossentropy", "MeanSquaredError",
    "SGD", "Adam", "AdamW", "RMSprop", "StepDecay", "CosineDecay", "LearningRateSchedule",
    "clip_grad_norm",
    # callbacks
    "Callback", "History", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
    "LearningRateScheduler", "CSVLogger", "BackupAndRestore",
    "LambdaCallback",
    # data and text
    "Tokenizer", "Vocabulary", "pad_sequences", "Dataset", "DataError", "load_aclimdb",
    "load_imdb_npz", "load_mr", "load_delimited", "load_digits_sequences",
    "make_sentiment_texts", "make_noisy_sine", "make_pattern_text", "lm_windows", "encode_labels",
    "stratified_split", "length_batches",
    # errors, plotting
    "VerificationError", "CheckpointError", "plot_history",
]
