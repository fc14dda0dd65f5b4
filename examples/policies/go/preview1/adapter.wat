;; natgw's wasi_snapshot_preview1 adapter for Go policies.
;;
;; Go's wasip1 runtime imports the preview1 functions below. The general-purpose adapter
;; from wasmtime cannot serve it: it allocates its state through the module's cabi_realloc,
;; which is Go code, the first time Go's runtime calls WASI, during _initialize, before Go
;; can take a call (the instance traps with "undefined element"). A policy needs none of
;; what that adapter offers (files, sockets, environment), so this one keeps no state in
;; memory, never grows memory (Go's allocator assumes it alone does) and maps the little Go
;; uses onto the natgw:policy host interface:
;;
;;   clock_time_get     host.monotonic-now-ns (both clocks: a policy has no wall clock)
;;   fd_write           host.log, error level for stderr (a Go panic reaches the gateway log)
;;   random_get         xorshift64*, seeded from the clock: map seeds, not cryptography
;;   args, environ      empty; stdin at end of file; no preopened directories
;;   poll_oneoff        returns at once: a policy call never sleeps
;;   proc_exit          traps (the policy's fault, reported with its output)
;;
;; The component built with it imports natgw:policy/host and no WASI at all.
(module
  (import "env" "memory" (memory 0))
  (import "natgw:policy/host@0.2.0" "log" (func $log (param i32 i32 i32)))
  (import "natgw:policy/host@0.2.0" "monotonic-now-ns" (func $now (result i64)))

  (global $rng (mut i64) (i64.const 0))

  ;; errno values
  (global $SUCCESS i32 (i32.const 0))
  (global $BADF i32 (i32.const 8))

  (func (export "sched_yield") (result i32) (global.get $SUCCESS))
  (func (export "proc_exit") (param i32) (unreachable))

  (func $empty_list (param $count i32) (param $bytes i32) (result i32)
    (i32.store (local.get $count) (i32.const 0))
    (i32.store (local.get $bytes) (i32.const 0))
    (global.get $SUCCESS))
  (func (export "args_sizes_get") (param i32 i32) (result i32) (call $empty_list (local.get 0) (local.get 1)))
  (func (export "args_get") (param i32 i32) (result i32) (global.get $SUCCESS))
  (func (export "environ_sizes_get") (param i32 i32) (result i32) (call $empty_list (local.get 0) (local.get 1)))
  (func (export "environ_get") (param i32 i32) (result i32) (global.get $SUCCESS))

  (func (export "clock_time_get") (param $id i32) (param $precision i64) (param $out i32) (result i32)
    (i64.store (local.get $out) (call $now))
    (global.get $SUCCESS))

  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (local $x i64)
    (local.set $x (global.get $rng))
    (if (i64.eqz (local.get $x))
      (then (local.set $x (i64.or (i64.mul (call $now) (i64.const 0x9E3779B97F4A7C15)) (i64.const 1)))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 12))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 25))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 27))))
        (i64.store8 (local.get $buf)
          (i64.shr_u (i64.mul (local.get $x) (i64.const 0x2545F4914F6CDD1D)) (i64.const 56)))
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (global.set $rng (local.get $x))
    (global.get $SUCCESS))

  ;; stdout and stderr go to the gateway log, one line per buffer; other descriptors do not exist.
  (func (export "fd_write") (param $fd i32) (param $iovs i32) (param $n i32) (param $written i32) (result i32)
    (local $total i32) (local $len i32)
    (if (i32.or (i32.lt_u (local.get $fd) (i32.const 1)) (i32.gt_u (local.get $fd) (i32.const 2)))
      (then (return (global.get $BADF))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $len (i32.load offset=4 (local.get $iovs)))
        (if (local.get $len)
          (then
            ;; log-level: 1 info (stdout), 3 error (stderr)
            (call $log (select (i32.const 3) (i32.const 1) (i32.eq (local.get $fd) (i32.const 2)))
              (i32.load (local.get $iovs)) (local.get $len))))
        (local.set $total (i32.add (local.get $total) (local.get $len)))
        (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $written) (local.get $total))
    (global.get $SUCCESS))

  ;; stdin: always at end of file.
  (func (export "fd_read") (param $fd i32) (param $iovs i32) (param $n i32) (param $read i32) (result i32)
    (if (local.get $fd) (then (return (global.get $BADF))))
    (i32.store (local.get $read) (i32.const 0))
    (global.get $SUCCESS))

  ;; fdstat for 0, 1 and 2: a character device with every right; nothing else is open.
  (func (export "fd_fdstat_get") (param $fd i32) (param $out i32) (result i32)
    (if (i32.gt_u (local.get $fd) (i32.const 2)) (then (return (global.get $BADF))))
    (i64.store (local.get $out) (i64.const 2))
    (i64.store offset=8 (local.get $out) (i64.const -1))
    (i64.store offset=16 (local.get $out) (i64.const 0))
    (global.get $SUCCESS))
  (func (export "fd_fdstat_set_flags") (param $fd i32) (param i32) (result i32)
    (select (global.get $SUCCESS) (global.get $BADF) (i32.le_u (local.get $fd) (i32.const 2))))
  (func (export "fd_close") (param $fd i32) (result i32)
    (select (global.get $SUCCESS) (global.get $BADF) (i32.le_u (local.get $fd) (i32.const 2))))
  (func (export "fd_prestat_get") (param i32 i32) (result i32) (global.get $BADF))
  (func (export "fd_prestat_dir_name") (param i32 i32 i32) (result i32) (global.get $BADF))

  (func (export "poll_oneoff") (param $in i32) (param $out i32) (param $nsubs i32) (param $nevents i32) (result i32)
    (i32.store (local.get $nevents) (i32.const 0))
    (global.get $SUCCESS))
)
