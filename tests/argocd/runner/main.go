// argocd-lua runs one Argo CD resource customization script on one object the way
// Argo CD's Lua VM does: gopher-lua with only the package, base and table libraries and a
// reduced os library (no io, no string library, no os.execute), the object as the global
// `obj`, a one-second limit, and the returned table turned into JSON.
//
//	argocd-lua health|discovery|action SCRIPT < object.json > result.json
//
// health prints {"status": ..., "message": ...} (a status Argo CD does not know becomes
// Unknown, as there); discovery prints the table of actions; action prints the object the
// action returns. A script error or a return value that is not a table exits 1 with the
// error on stderr.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"math"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func main() {
	if len(os.Args) != 3 {
		fail("usage: argocd-lua health|discovery|action SCRIPT < object.json")
	}
	mode, path := os.Args[1], os.Args[2]
	script, err := ioutil.ReadFile(path)
	if err != nil {
		fail(err.Error())
	}
	input, err := ioutil.ReadAll(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(input, &obj); err != nil {
		fail("object: " + err.Error())
	}
	result, err := run(obj, string(script))
	if err != nil {
		fail(err.Error())
	}
	var out interface{} = result
	switch mode {
	case "health":
		out = health(result)
	case "discovery", "action":
		if _, ok := result.(map[string]interface{}); !ok {
			fail(fmt.Sprintf("%s script returned %T, not a table with keys", mode, result))
		}
	default:
		fail("unknown mode " + mode)
	}
	encoded, err := json.Marshal(out)
	if err != nil {
		fail(err.Error())
	}
	os.Stdout.Write(append(encoded, '\n'))
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "argocd-lua:", message)
	os.Exit(1)
}

var known = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true,
	"Missing": true, "Unknown": true,
}

func health(result interface{}) map[string]interface{} {
	table, _ := result.(map[string]interface{})
	status, _ := table["status"].(string)
	message, _ := table["message"].(string)
	if !known[status] {
		return map[string]interface{}{"status": "Unknown", "message": "Lua returned an invalid health status"}
	}
	return map[string]interface{}{"status": status, "message": message}
}

// run executes script with obj as the global `obj` and returns its return value as Go data.
func run(obj map[string]interface{}, script string) (interface{}, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), NRet: 0, Protect: true}, lua.LString(name)); err != nil {
			return nil, err
		}
	}
	safe := safeOs(l)
	l.SetGlobal(lua.OsLibName, safe)
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(safe)
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	value := l.Get(-1)
	if value.Type() != lua.LTTable {
		return nil, fmt.Errorf("expected a table from the script, not %s", value.Type())
	}
	return fromLua(value), nil
}

// safeOs is the os library reduced to its clock and date functions: what Argo CD allows.
func safeOs(l *lua.LState) *lua.LTable {
	full := l.NewTable()
	l.Push(l.NewFunction(lua.OpenOs))
	l.Push(lua.LString(lua.OsLibName))
	l.Call(1, 1)
	if t, ok := l.Get(-1).(*lua.LTable); ok {
		full = t
	}
	l.Pop(1)
	l.SetGlobal(lua.OsLibName, lua.LNil)
	safe := l.NewTable()
	for _, name := range []string{"clock", "date", "difftime", "time"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	return safe
}

func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.NewTable()
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// fromLua turns a Lua value into JSON-ready data: a table whose keys are 1..n is an array,
// any other table an object (an empty table is an empty object).
func fromLua(value lua.LValue) interface{} {
	switch v := value.(type) {
	case lua.LBool:
		return bool(v)
	case lua.LNumber:
		f := float64(v)
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f)
		}
		return f
	case lua.LString:
		return string(v)
	case *lua.LTable:
		n := v.Len()
		keys := 0
		v.ForEach(func(lua.LValue, lua.LValue) { keys++ })
		if n > 0 && n == keys {
			items := make([]interface{}, 0, n)
			for i := 1; i <= n; i++ {
				items = append(items, fromLua(v.RawGetInt(i)))
			}
			return items
		}
		object := map[string]interface{}{}
		v.ForEach(func(key, item lua.LValue) {
			object[key.String()] = fromLua(item)
		})
		return object
	}
	return nil
}
