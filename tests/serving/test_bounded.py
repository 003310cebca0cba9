"""What the bounded MLflow server keeps of MLflow's error messages: the model's own words, never the request."""

from pipeline.serving.bounded import MAX_MESSAGE_CHARS, MLFLOW_NOT_JSON, brief


def test_the_model_s_message_is_kept_and_the_request_mlflow_repeats_before_it_is_not():
    echoed = "Failed to predict data '" + "A" * 50_000 + "'. \nError: expected base64 of an image file"
    assert brief(echoed) == "expected base64 of an image file"
    # a request whose data holds MLflow's not-JSON sentence is still answered with the model's message
    quoting = f"Failed to predict data '{MLFLOW_NOT_JSON}'. \nError: expected integers 0-255"
    assert brief(quoting) == "expected integers 0-255"


def test_a_message_longer_than_the_limit_is_cut_and_says_by_how_much():
    message = "x" * (MAX_MESSAGE_CHARS + 3000)
    assert brief(message) == "x" * MAX_MESSAGE_CHARS + "… (3000 more characters cut)"
    assert brief("y" * MAX_MESSAGE_CHARS) == "y" * MAX_MESSAGE_CHARS
