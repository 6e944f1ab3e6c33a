"""What a person reads: tiered views, the letter, HTML reports and charts."""
