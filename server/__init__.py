"""The federation's server: the Flower ServerApp, its rounds, the unlearning phase, the gate and the report."""
