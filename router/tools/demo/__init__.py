"""`supernet demo`: the whole engine end to end, with a summary from receipts and plots."""
