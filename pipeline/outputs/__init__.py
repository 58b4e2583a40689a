"""What landwatch hands out: field packages, reports, charts and chips."""
