"""The study report: which ablations answer which question, the statistics, the plots."""
