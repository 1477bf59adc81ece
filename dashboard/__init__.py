"""Streamlit dashboard over a results store. Reads; never recomputes inference."""

__all__: list[str] = []
