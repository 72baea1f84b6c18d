"""Figure builders (numpy / PIL / plotly); no UI framework here."""
