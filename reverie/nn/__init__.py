"""Neural-network building blocks every agent family uses: layers, conv stacks, output
distributions, the maths of world-model RL (symlog, two-hot, λ-returns) and the optimisers."""
