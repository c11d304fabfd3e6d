"""The trainer's background jobs (`feedbackloop.pipeline.jobs`), wired in `main.py`: `relay`
(the training-examples outbox), `object_export`, `explanations` and `retraining`, with their
SQL beside them (`explanation_store`, `retraining_store`)."""
