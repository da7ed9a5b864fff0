package filters

func (r *run) hl7(body []byte) (Result, error) {
	return Result{}, errorf(CodeUnsupportedMedia, "hl7 v2 not yet supported")
}
