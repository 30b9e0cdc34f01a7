"""The scaling-law study: design → plan → runs → fit → optimal ratios → confirmation → report."""
