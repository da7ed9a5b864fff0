package filters

// ProfileSafeHarbor names the HIPAA Safe Harbor de-identification profile.
const ProfileSafeHarbor = "safe-harbor"

func (r *run) safeHarbor(res *node, rt string, rl *rule) bool { return false }

func (r *run) hl7SafeHarbor(m *message) {}
