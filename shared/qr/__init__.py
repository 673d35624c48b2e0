"""Query/retrieve: what a research coordinator asks for, and the spreadsheet given back."""
