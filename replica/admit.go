package replica

// AdmitAll composes Config.Admit rules: a change is admitted when every one
// of fns (nil ones are skipped) admits it, and refused with the first
// refusal otherwise. With no rule it returns nil (admit everything).
func AdmitAll(fns ...func(Change) error) func(Change) error {
	var rules []func(Change) error
	for _, fn := range fns {
		if fn != nil {
			rules = append(rules, fn)
		}
	}
	switch len(rules) {
	case 0:
		return nil
	case 1:
		return rules[0]
	}
	return func(c Change) error {
		for _, fn := range rules {
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	}
}

// AdmitValues is a Config.Admit rule over a change's key and value alone,
// such as a schema check (codec.Registry.CheckChange): check is given the
// value of every change that carries one and told when it is a delete.
func AdmitValues(check func(key string, value []byte, deleted bool) error) func(Change) error {
	if check == nil {
		return nil
	}
	return func(c Change) error { return check(c.Key, c.Value, c.Deleted) }
}
