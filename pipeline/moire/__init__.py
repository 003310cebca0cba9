"""Camera photographing a screen: display → optics → sensor → ISP, composed in `simulate`."""
