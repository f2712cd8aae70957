package eventstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Checkpointer is a Projection whose state can be saved with the position it reached and restored,
// so that a restart replays only the tail of the stream. A Runner created WithCheckpoints calls
// Checkpoint between two Applies, never concurrently with one; the function it returns may run
// concurrently with later Applies, so it must write the state as it was when Checkpoint returned.
// Restore replaces the whole state with the one r holds: it reads r to its end (r fails there when
// the checkpoint is corrupt) and changes nothing unless it returns nil. Restore is called at most
// once, before the first Apply.
type Checkpointer interface {
	Projection
	Checkpoint() (write func(w io.Writer) error)
	Restore(r io.Reader) error
}

// CheckpointStore keeps one checkpoint per projection name. Put replaces the checkpoint atomically:
// a reader sees the old one or the new one, never a part. Get of a name without a checkpoint fails
// with ErrNoCheckpoint.
type CheckpointStore interface {
	Put(ctx context.Context, name string, r io.Reader) error
	Get(ctx context.Context, name string) (io.ReadCloser, error)
}

// ErrNoCheckpoint is CheckpointStore.Get's answer for a projection that has no checkpoint.
var ErrNoCheckpoint = errors.New("eventstore: no checkpoint")

// ErrCorruptCheckpoint marks a checkpoint whose checksum or framing is wrong.
var ErrCorruptCheckpoint = errors.New("eventstore: corrupt checkpoint")

// CheckpointPolicy says when a Runner writes checkpoints.
type CheckpointPolicy struct {
	// Every is the number of applied events after which a checkpoint is written (default 10,000).
	Every int
	// Interval is the longest time an applied event waits for a checkpoint (default 1 minute); it
	// is checked as events arrive.
	Interval time.Duration
	// OnStop writes a checkpoint when Run returns with events applied since the last one.
	OnStop bool
}

// CheckpointInfo identifies what a checkpoint holds: whose state, of which stream incarnation,
// up to which position. A Runner restores a checkpoint only when all of it matches.
type CheckpointInfo struct {
	// Projection is the projection's name (with its version).
	Projection string `json:"projection"`
	// Stream is the stream the projection follows.
	Stream string `json:"stream"`
	// StreamCreated is the stream's creation time: a stream deleted and created again has another.
	StreamCreated time.Time `json:"stream_created"`
	// Filters are the runner's filter subjects.
	Filters []string `json:"filters"`
	// Position is the stream sequence the state is complete up to.
	Position uint64 `json:"position"`
	// Written is when the checkpoint was taken.
	Written time.Time `json:"written"`
}

// checkpointMagic starts every checkpoint (format version 1).
const checkpointMagic = "AGENTID-CHECKPOINT-1\n"

// maxCheckpointHeader bounds the header a reader accepts.
const maxCheckpointHeader = 1 << 20

// maxCheckpointFrame bounds one body frame.
const maxCheckpointFrame = 1 << 24

// checkpointFrame is the size of the body frames a writer emits.
const checkpointFrame = 1 << 20

// WriteCheckpoint writes a checkpoint of info and the body that write produces to w: the magic, the
// header (JSON, length-prefixed), the body in length-prefixed frames ended by an empty frame, and a
// SHA-256 over everything before it.
func WriteCheckpoint(w io.Writer, info CheckpointInfo, write func(io.Writer) error) error {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	hdr, err := json.Marshal(info)
	if err != nil {
		return err
	}
	bw.WriteString(checkpointMagic)
	writeUvarint(bw, uint64(len(hdr)))
	bw.Write(hdr)
	fw := &frameWriter{w: bw, buf: make([]byte, 0, checkpointFrame)}
	if err := write(fw); err != nil {
		return fmt.Errorf("eventstore: checkpoint of %s: %w", info.Projection, err)
	}
	if err := fw.flush(); err != nil {
		return err
	}
	writeUvarint(bw, 0)
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(h.Sum(nil))
	return err
}

func writeUvarint(w io.Writer, v uint64) {
	var b [binary.MaxVarintLen64]byte
	w.Write(b[:binary.PutUvarint(b[:], v)])
}

// frameWriter cuts the body into frames.
type frameWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (f *frameWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && f.err == nil {
		k := min(len(p), cap(f.buf)-len(f.buf))
		f.buf = append(f.buf, p[:k]...)
		p = p[k:]
		if len(f.buf) == cap(f.buf) {
			f.err = f.flush()
		}
	}
	if f.err != nil {
		return 0, f.err
	}
	return n, nil
}

func (f *frameWriter) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	writeUvarint(f.w, uint64(len(f.buf)))
	_, err := f.w.Write(f.buf)
	f.buf = f.buf[:0]
	return err
}

// CheckpointReader reads a checkpoint written by WriteCheckpoint: Info is its header and Read its
// body, which fails with ErrCorruptCheckpoint instead of io.EOF when the checksum does not match.
type CheckpointReader struct {
	// Info is the checkpoint's header.
	Info CheckpointInfo

	r    *hashedReader
	left uint64 // bytes left in the current frame
	done bool
	err  error
}

// hashedReader hashes every byte it hands out, so the hash covers exactly what was consumed.
type hashedReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (h *hashedReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

func (h *hashedReader) ReadByte() (byte, error) {
	b, err := h.r.ReadByte()
	if err == nil {
		h.h.Write([]byte{b})
	}
	return b, err
}

// NewCheckpointReader reads the header of the checkpoint in r.
func NewCheckpointReader(r io.Reader) (*CheckpointReader, error) {
	cr := &CheckpointReader{r: &hashedReader{r: bufio.NewReaderSize(r, 64<<10), h: sha256.New()}}
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(cr.r, magic); err != nil || string(magic) != checkpointMagic {
		return nil, fmt.Errorf("%w: not a checkpoint (magic)", ErrCorruptCheckpoint)
	}
	n, err := binary.ReadUvarint(cr.r)
	if err != nil || n > maxCheckpointHeader {
		return nil, fmt.Errorf("%w: header length", ErrCorruptCheckpoint)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(cr.r, hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorruptCheckpoint, err)
	}
	if err := json.Unmarshal(hdr, &cr.Info); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorruptCheckpoint, err)
	}
	return cr, nil
}

// Read implements io.Reader over the checkpoint's body.
func (c *CheckpointReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		n, err := binary.ReadUvarint(c.r)
		if err != nil || n > maxCheckpointFrame {
			c.err = fmt.Errorf("%w: frame length", ErrCorruptCheckpoint)
			return 0, c.err
		}
		if n == 0 {
			if c.err = c.verify(); c.err != nil {
				return 0, c.err
			}
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if uint64(len(p)) > c.left {
		p = p[:c.left]
	}
	k, err := c.r.Read(p)
	c.left -= uint64(k)
	switch {
	case err == io.EOF:
		c.err = fmt.Errorf("%w: truncated", ErrCorruptCheckpoint)
		return k, c.err
	case err != nil:
		c.err = err
		return k, err
	}
	return k, nil
}

// verify compares the trailing checksum with the hash of everything before it, and checks that
// nothing follows.
func (c *CheckpointReader) verify() error {
	want := c.r.h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c.r.r, got); err != nil {
		return fmt.Errorf("%w: checksum missing", ErrCorruptCheckpoint)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: checksum mismatch", ErrCorruptCheckpoint)
	}
	if _, err := c.r.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: data after the checksum", ErrCorruptCheckpoint)
	}
	return nil
}

// DirCheckpoints is a CheckpointStore in a local directory: one file per projection, replaced by
// an fsynced temporary file renamed over it.
type DirCheckpoints struct {
	dir string
}

// NewDirCheckpoints returns a store in dir, creating it. An existing dir that is writable by its
// group or by others, or owned by another user, is refused: whoever can write there could forge a
// checkpoint (its checksum is no secret) and so the state a projection restores.
func NewDirCheckpoints(dir string) (*DirCheckpoints, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("eventstore: checkpoint directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("eventstore: checkpoint directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("eventstore: checkpoint directory %s: not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("eventstore: checkpoint directory %s: mode %#o is writable by group or others (at most 0755; chmod go-w)", dir, perm)
	}
	if uid, foreign := foreignOwner(fi); foreign {
		return nil, fmt.Errorf("eventstore: checkpoint directory %s: owned by uid %d, not by this process's user (uid %d)", dir, uid, os.Geteuid())
	}
	return &DirCheckpoints{dir: dir}, nil
}

func (d *DirCheckpoints) path(name string) string {
	return filepath.Join(d.dir, consumerToken(name)+".ckpt")
}

// Put implements CheckpointStore.
func (d *DirCheckpoints) Put(_ context.Context, name string, r io.Reader) (err error) {
	f, err := os.CreateTemp(d.dir, consumerToken(name)+".*.tmp")
	if err != nil {
		return fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = io.Copy(f, r); err != nil {
		return fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	if err = os.Rename(f.Name(), d.path(name)); err != nil {
		return fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	if dir, derr := os.Open(d.dir); derr == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// Get implements CheckpointStore. The file itself is checked as the directory is: one that is not
// a regular file (a symbolic link, a device, a pipe), is owned by another user, or is writable by
// its group or by others is refused, since whoever could have written it could forge the state a
// projection restores. The file opened must be the one checked (not replaced in between).
func (d *DirCheckpoints) Get(_ context.Context, name string) (io.ReadCloser, error) {
	path := d.path(name)
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoCheckpoint
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	if err := checkCheckpointFile(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoCheckpoint
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	opened, err := f.Stat()
	if err == nil && !os.SameFile(fi, opened) {
		err = fmt.Errorf("eventstore: checkpoint file %s: replaced while it was opened", path)
	} else if err == nil {
		err = checkCheckpointFile(path, opened)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkCheckpointFile refuses a checkpoint file fi (at path) that is not a regular file, is owned
// by another user, or is writable by its group or by others (mode wider than 0644).
func checkCheckpointFile(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("eventstore: checkpoint file %s: not a regular file (%s); refused", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("eventstore: checkpoint file %s: mode %#o is writable by group or others (at most 0644); refused", path, perm)
	}
	if uid, foreign := foreignOwner(fi); foreign {
		return fmt.Errorf("eventstore: checkpoint file %s: owned by uid %d, not by this process's user (uid %d); refused", path, uid, os.Geteuid())
	}
	return nil
}

// checkpointChunk is the chunk size of checkpoint objects (under NATS's default 1 MiB payload limit).
const checkpointChunk = 512 << 10

// CheckpointBucket is the JetStream object store bucket of ObjectCheckpoints.
const CheckpointBucket = "CHECKPOINTS"

// ObjectCheckpoints is a CheckpointStore in a JetStream object store bucket, shared by every
// replica: an object is visible only once all of it is stored.
type ObjectCheckpoints struct {
	js       jetstream.JetStream
	replicas int

	mu  sync.Mutex
	obs jetstream.ObjectStore // nil until opened
}

// NewObjectCheckpoints opens the bucket (CheckpointBucket), creating it with replicas replicas.
func NewObjectCheckpoints(ctx context.Context, js jetstream.JetStream, replicas int) (*ObjectCheckpoints, error) {
	o := OpenObjectCheckpoints(js, replicas)
	if _, err := o.open(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

// OpenObjectCheckpoints returns a store in the bucket CheckpointBucket that opens it (creating it
// with replicas replicas) at its first use, and again after a failure: a process starts while the
// bucket cannot be reached, and its runners rebuild from the stream meanwhile.
func OpenObjectCheckpoints(js jetstream.JetStream, replicas int) *ObjectCheckpoints {
	return &ObjectCheckpoints{js: js, replicas: replicas}
}

func (o *ObjectCheckpoints) open(ctx context.Context) (jetstream.ObjectStore, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.obs != nil {
		return o.obs, nil
	}
	obs, err := o.js.ObjectStore(ctx, CheckpointBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = o.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      CheckpointBucket,
			Description: "Projection checkpoints (state and stream position)",
			Storage:     jetstream.FileStorage,
			Replicas:    max(o.replicas, 1),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: checkpoint bucket: %w", err)
	}
	o.obs = obs
	return obs, nil
}

// Put implements CheckpointStore.
func (o *ObjectCheckpoints) Put(ctx context.Context, name string, r io.Reader) error {
	ctx, cancel := withTransferDeadline(ctx)
	defer cancel()
	obs, err := o.open(ctx)
	if err != nil {
		return err
	}
	// Large chunks: a restore reads hundreds of megabytes, and each chunk is one message.
	meta := jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: checkpointChunk}}
	if _, err := obs.Put(ctx, meta, r); err != nil {
		return fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	return nil
}

// Get implements CheckpointStore.
func (o *ObjectCheckpoints) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	ctx, cancel := withTransferDeadline(ctx)
	obs, err := o.open(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	res, err := obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		cancel()
		return nil, ErrNoCheckpoint
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("eventstore: checkpoint %s: %w", name, err)
	}
	return &objectReader{ObjectResult: res, cancel: cancel}, nil
}

// checkpointTransfer bounds writing or reading one checkpoint object. Without a deadline of its
// own, the object store gives a whole transfer its default request timeout (5 s), which a
// checkpoint of a million agents (hundreds of megabytes) does not meet.
const checkpointTransfer = 15 * time.Minute

func withTransferDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, checkpointTransfer)
}

// objectReader ends the transfer's context when the object is closed.
type objectReader struct {
	jetstream.ObjectResult
	cancel context.CancelFunc
}

func (o *objectReader) Close() error {
	defer o.cancel()
	return o.ObjectResult.Close()
}

// checkpointing is a Runner's checkpoint state.
type checkpointing struct {
	store    CheckpointStore
	policy   CheckpointPolicy
	tried    bool      // the restore has been tried
	since    int       // events applied since the last checkpoint
	last     time.Time // when the last checkpoint was taken
	writing  chan struct{}
	created  time.Time // the stream's creation time
	caughtUp bool      // the runner has reached its ready target once
}

// WithCheckpoints makes the runner restore its projection, which must be a Checkpointer, from
// store at start (a missing, corrupt or foreign checkpoint is logged and the projection rebuilt
// from the first event) and write checkpoints as policy says: once when it first catches up, then
// every policy.Every events or policy.Interval.
func WithCheckpoints(store CheckpointStore, policy CheckpointPolicy) RunnerOption {
	if policy.Every <= 0 {
		policy.Every = 10_000
	}
	if policy.Interval <= 0 {
		policy.Interval = time.Minute
	}
	return func(r *Runner) { r.ckpt = &checkpointing{store: store, policy: policy} }
}

// restoreCheckpoint restores the projection from its checkpoint when it matches info, the stream
// as the runner found it. Whatever fails is logged, and the runner rebuilds from its position.
func (r *Runner) restoreCheckpoint(ctx context.Context, info *jetstream.StreamInfo) {
	c := r.ckpt
	c.created = info.Created
	if c.tried {
		return
	}
	c.tried = true
	cp, ok := r.p.(Checkpointer)
	if !ok {
		r.s.logger.ErrorContext(ctx, "projection cannot be checkpointed (not an eventstore.Checkpointer)", "projection", r.p.Name())
		r.ckpt = nil
		return
	}
	if r.Position() != 0 {
		return // StartAfter: the projection brought its own state
	}
	start := time.Now()
	rc, err := c.store.Get(ctx, r.p.Name())
	if errors.Is(err, ErrNoCheckpoint) {
		r.s.logger.InfoContext(ctx, "no checkpoint; rebuilding the projection", "projection", r.p.Name(), "stream", r.stream)
		return
	}
	if err != nil {
		r.s.logger.WarnContext(ctx, "checkpoint unreadable; rebuilding the projection", "projection", r.p.Name(), "error", err)
		return
	}
	defer rc.Close()
	cr, err := NewCheckpointReader(rc)
	if err != nil {
		r.s.logger.WarnContext(ctx, "checkpoint corrupt; rebuilding the projection", "projection", r.p.Name(), "error", err)
		return
	}
	if why := r.foreign(cr.Info, info); why != "" {
		r.s.logger.WarnContext(ctx, "checkpoint ignored; rebuilding the projection", "projection", r.p.Name(), "reason", why)
		return
	}
	if err := safeRestore(cp, cr); err != nil {
		r.s.logger.WarnContext(ctx, "checkpoint not restored; rebuilding the projection", "projection", r.p.Name(), "error", err)
		return
	}
	r.mu.Lock()
	r.pos, r.startPos = cr.Info.Position, cr.Info.Position
	r.mu.Unlock()
	c.last = time.Now()
	r.s.logger.InfoContext(ctx, "projection restored from checkpoint", "projection", r.p.Name(), "stream", r.stream,
		"position", cr.Info.Position, "written", cr.Info.Written, "took", time.Since(start))
}

// safeRestore calls Restore, turning a panic into an error.
func safeRestore(cp Checkpointer, cr *CheckpointReader) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("restore panicked: %v", v)
		}
	}()
	if err := cp.Restore(cr); err != nil {
		return err
	}
	// Restore must have read to the end, where the checksum is verified.
	if _, err := cr.Read(make([]byte, 1)); err != io.EOF {
		return fmt.Errorf("checkpoint body not read to its end: %v", err)
	}
	return nil
}

// foreign says why a checkpoint with header got does not belong to this runner over the stream
// info, empty when it does.
func (r *Runner) foreign(got CheckpointInfo, info *jetstream.StreamInfo) string {
	switch {
	case got.Projection != r.p.Name():
		return fmt.Sprintf("written by projection %q", got.Projection)
	case got.Stream != r.stream:
		return fmt.Sprintf("of stream %q", got.Stream)
	case !got.StreamCreated.Equal(info.Created):
		return fmt.Sprintf("of another incarnation of stream %s (created %s, the stream now %s)", r.stream, got.StreamCreated, info.Created)
	case !slices.Equal(got.Filters, r.filters):
		return fmt.Sprintf("with filters %v, the runner has %v", got.Filters, r.filters)
	case got.Position > info.State.LastSeq:
		return fmt.Sprintf("at position %d beyond the stream's last sequence %d", got.Position, info.State.LastSeq)
	}
	return ""
}

// afterApply counts an applied event and starts a checkpoint when one is due. It runs on the
// runner's goroutine, between two Applies.
func (r *Runner) afterApply(ctx context.Context) {
	c := r.ckpt
	if c == nil {
		return
	}
	c.since++
	r.mu.Lock()
	pos, target := r.pos, r.readyTarget
	r.mu.Unlock()
	if !c.caughtUp {
		if pos < target {
			return // replaying: one checkpoint once caught up, not many on the way
		}
		c.caughtUp = true
	} else if c.since < c.policy.Every && time.Since(c.last) < c.policy.Interval {
		return
	}
	if c.writing != nil {
		select {
		case <-c.writing:
		default:
			return // the previous one is still being written
		}
	}
	r.startCheckpoint(ctx)
}

// startCheckpoint captures the projection's state and writes it in the background.
func (r *Runner) startCheckpoint(ctx context.Context) {
	c := r.ckpt
	cp := r.p.(Checkpointer)
	r.applyMu.Lock()
	write := cp.Checkpoint()
	pos := r.Position()
	r.applyMu.Unlock()
	info := CheckpointInfo{
		Projection: r.p.Name(), Stream: r.stream, StreamCreated: c.created,
		Filters: slices.Clone(r.filters), Position: pos, Written: time.Now().UTC(),
	}
	c.since, c.last = 0, time.Now()
	done := make(chan struct{})
	c.writing = done
	go func() {
		defer close(done)
		wctx := context.WithoutCancel(ctx)
		start := time.Now()
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(WriteCheckpoint(pw, info, write)) }()
		err := c.store.Put(wctx, r.p.Name(), pr)
		pr.CloseWithError(err)
		if err != nil {
			r.s.logger.WarnContext(ctx, "checkpoint not written", "projection", r.p.Name(), "position", pos, "error", err)
			return
		}
		r.s.logger.DebugContext(ctx, "checkpoint written", "projection", r.p.Name(), "position", pos, "took", time.Since(start))
	}()
}

// stopCheckpoints waits for a checkpoint being written and, when the policy says so, writes a last
// one of what was applied since.
func (r *Runner) stopCheckpoints(ctx context.Context) {
	c := r.ckpt
	if c == nil {
		return
	}
	if c.writing != nil {
		<-c.writing
	}
	if c.policy.OnStop && c.since > 0 && c.caughtUp {
		r.startCheckpoint(ctx)
		<-c.writing
	}
}
