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


def test_a_body_that_is_not_json_is_named_with_the_parser_s_position_whatever_quotes_its_repr_took():
    def mlflow_s(error: str) -> str:
        return f"{MLFLOW_NOT_JSON} Error: '{error}'\nInput: \nb'{'z' * 10_000}'\n"

    tail = " (send {\"inputs\": …}: an array of 0–255 values or base64 of an image file)"
    assert brief(mlflow_s("JSONDecodeError('Expecting value: line 1 column 1 (char 0)')")) == (
        "the request body is not JSON (Expecting value: line 1 column 1 (char 0))" + tail)
    assert brief(mlflow_s("""JSONDecodeError("Expecting ',' delimiter: line 1 column 9 (char 8)")""")) == (
        "the request body is not JSON (Expecting ',' delimiter: line 1 column 9 (char 8))" + tail)
    assert brief(mlflow_s("UnicodeDecodeError('utf-8', b'\\x89PNG', 0, 1, 'invalid start byte')")) == (
        "the request body is not JSON: not UTF-8 text" + tail)
