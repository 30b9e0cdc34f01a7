"""Laws fitted to runs: observations, the robust fit and its bootstrap, law selection, predictions, the optimum over
the simplex, the independence test, and the reports and plots of a fit."""
