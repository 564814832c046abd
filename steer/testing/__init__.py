"""What tests (steer's and its users') use: the stub upstream server (``steer.testing.stub``)."""
