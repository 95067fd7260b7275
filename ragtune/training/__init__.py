"""Fine-tuning: sentence-transformers + peft (LoRA/full) and the query-side tier."""
