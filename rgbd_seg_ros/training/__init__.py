"""Training, evaluation and export of backends on datasets in the project layout."""
