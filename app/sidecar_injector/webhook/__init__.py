"""The HTTP edge: the AdmissionReview envelope, the endpoints, the connection guard, TLS."""
