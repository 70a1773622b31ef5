"""telescore: rank telemarketing prospects and keep the model good."""
