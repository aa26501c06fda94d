"""The embedded code task: write `f(x)` for a one-line integer function, scored by hidden call tests in the sandbox;
and the base model it shares with the mixed runs (pretrained on addition and on code)."""
