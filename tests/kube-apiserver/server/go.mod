// The build is GOPATH mode (see ../cluster), which ignores this file except for
// one thing: imports with a major-version suffix (github.com/emicklei/go-restful/v3)
// resolve only from code under a go.mod ("minimal module compatibility").
module testapiserver

go 1.24
