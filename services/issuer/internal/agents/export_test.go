package agents

// Waiting is how many checks of g wait for a catch-up.
func Waiting(g *Gate) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}
