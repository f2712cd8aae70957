package eventstore

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Checkpointer is a Projection whose state can be saved with the position it reached and restored,
// so that a restart replays only the tail of the stream. A Runner created WithCheckpoints calls
// Checkpoint between two Applies, never concurrently with one; the function it returns may run
// concurrently with later Applies, so it must write the state as it was when Checkpoint returned.
// Restore replaces the whole state with the one r holds: it reads r to its end (r fails there when
// the checkpoint is corrupt) and changes nothing unless it returns nil. Restore is called before
// the first Apply, and again (with an older checkpoint of a CheckpointSet) only after it returned
// an error.
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

// DefaultCheckpointBucketBytes is the size limit (MaxBytes) of the checkpoint bucket unless
// WithCheckpointBucketBytes says otherwise: room for two checkpoints of a million agents (a few
// hundred megabytes each) per replica, several replicas, and a replacement being written.
const DefaultCheckpointBucketBytes int64 = 8 << 30

// CheckpointCandidate is one of the checkpoints of a projection a CheckpointSet holds.
type CheckpointCandidate struct {
	// Key names it in the store (for logs).
	Key string
	// Written is when the store stored it.
	Written time.Time
	// Open reads it; ErrNoCheckpoint when it is gone meanwhile.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// CheckpointSet is a CheckpointStore that keeps several checkpoints of one projection, one per
// writer (ObjectCheckpoints: one per replica). A Runner restores the newest of them that is valid,
// trying the next one when one is corrupt, foreign or not restored.
type CheckpointSet interface {
	CheckpointStore
	// Checkpoints lists name's checkpoints, newest first; none is not an error.
	Checkpoints(ctx context.Context, name string) ([]CheckpointCandidate, error)
}

// ObjectCheckpoints is a CheckpointStore in a JetStream object store bucket shared by every replica
// (a CheckpointSet): each replica writes its own object per projection, <projection>@<replica id>,
// so that no two processes ever write one object (the object store's replacement purges only what
// it read at its start: concurrent writers of one name leak chunks and purge those a reader
// reads). Get reads the newest of a projection's objects. An object is visible only once all of it
// is stored. Before and after each Put, the objects of the projection that a newer one superseded
// longer ago than a transfer may take (checkpointTransfer) are deleted: those of replicas gone (or
// renamed), and the object named after the projection alone that earlier releases wrote. Deleting
// them before as well lets a Put succeed in a bucket that they filled to its size limit.
type ObjectCheckpoints struct {
	js       jetstream.JetStream
	replicas int
	maxBytes int64
	replica  string
	logger   *slog.Logger
	now      func() time.Time // the clock of the clean-up (tests set it)

	mu  sync.Mutex
	obs jetstream.ObjectStore // nil until opened
}

// ObjectCheckpointOption configures an ObjectCheckpoints.
type ObjectCheckpointOption func(*ObjectCheckpoints)

// WithCheckpointReplica names this process's objects <projection>@id (default: the host name, so
// that a restarted process replaces its own objects, with -2, -3... for a process's second and
// later stores; a random id when there is no host name). Two processes must never share an id:
// processes on one host (not pods) each need their own.
func WithCheckpointReplica(id string) ObjectCheckpointOption {
	return func(o *ObjectCheckpoints) {
		if id != "" {
			o.replica = id
		}
	}
}

// WithCheckpointBucketBytes sets the size limit (default DefaultCheckpointBucketBytes) of a bucket
// this store creates, and the one it expects of an existing bucket (it warns when that differs); a
// Put that would exceed it fails, and the runner keeps its previous checkpoint.
func WithCheckpointBucketBytes(n int64) ObjectCheckpointOption {
	return func(o *ObjectCheckpoints) {
		if n > 0 {
			o.maxBytes = n
		}
	}
}

// WithCheckpointLogger logs what a Put cannot clean up (default slog.Default()).
func WithCheckpointLogger(l *slog.Logger) ObjectCheckpointOption {
	return func(o *ObjectCheckpoints) {
		if l != nil {
			o.logger = l
		}
	}
}

// NewObjectCheckpoints opens the bucket (CheckpointBucket), creating it with replicas replicas when
// it does not exist (see OpenObjectCheckpoints).
func NewObjectCheckpoints(ctx context.Context, js jetstream.JetStream, replicas int, opts ...ObjectCheckpointOption) (*ObjectCheckpoints, error) {
	o := OpenObjectCheckpoints(js, replicas, opts...)
	if _, err := o.open(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

// OpenObjectCheckpoints returns a store in the bucket CheckpointBucket that opens it at its first
// use, and again after a failure: a process starts while the bucket cannot be reached, and its
// runners rebuild from the stream meanwhile. The bucket is the administrator's: Store.EnsureStreams
// of a store created WithCheckpointBucket creates it or brings it to its replicas and size limit.
// Opening an existing bucket changes nothing; a bucket with fewer replicas or another size limit
// than replicas and the size limit is logged as a warning. A missing bucket is created with them
// (NATS identities of pkg/natsauth other than the administrator may not: there the open fails
// until the administrator's setup has run).
func OpenObjectCheckpoints(js jetstream.JetStream, replicas int, opts ...ObjectCheckpointOption) *ObjectCheckpoints {
	o := &ObjectCheckpoints{js: js, replicas: max(replicas, 1), maxBytes: DefaultCheckpointBucketBytes, replica: defaultReplicaID(), logger: slog.Default(), now: time.Now}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// StoreCheckpoints is OpenObjectCheckpoints over s's JetStream with s's replica count (WithReplicas):
// the bucket is replicated as the streams are.
func StoreCheckpoints(s *Store, opts ...ObjectCheckpointOption) *ObjectCheckpoints {
	return OpenObjectCheckpoints(s.js, s.replicas, opts...)
}

// defaultReplicas counts the stores that took a default replica id in this process.
var defaultReplicas atomic.Int64

// defaultReplicaID is the host name (a pod's name in Kubernetes), stable across restarts, so that a
// restart replaces its objects instead of leaving another; the second and later stores of one
// process add -2, -3 and so on, so that two never share an id. Without a host name it is
// "replica-" and a random suffix.
func defaultReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "replica-" + uuid.NewString()[:8]
	}
	if n := defaultReplicas.Add(1); n > 1 {
		return fmt.Sprintf("%s-%d", host, n)
	}
	return host
}

// Replica is the id this store's objects are named after (<projection>@<replica>).
func (o *ObjectCheckpoints) Replica() string { return o.replica }

func (o *ObjectCheckpoints) bucketConfig() jetstream.ObjectStoreConfig {
	return checkpointBucketConfig(o.replicas, o.maxBytes)
}

func (o *ObjectCheckpoints) open(ctx context.Context) (jetstream.ObjectStore, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.obs != nil {
		return o.obs, nil
	}
	cfg := o.bucketConfig()
	obs, err := o.js.ObjectStore(ctx, CheckpointBucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		obs, err = o.js.CreateObjectStore(ctx, cfg)
	case err == nil:
		o.checkConfig(ctx, obs, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: checkpoint bucket: %w", err)
	}
	o.obs = obs
	return obs, nil
}

// checkConfig warns when the existing bucket has fewer replicas than cfg or another size limit: the
// administrator's EnsureStreams manages them (natsauth gives no other identity STREAM.UPDATE of the
// bucket: it could add sources or subjects to it and so read streams it is denied).
func (o *ObjectCheckpoints) checkConfig(ctx context.Context, obs jetstream.ObjectStore, cfg jetstream.ObjectStoreConfig) {
	st, err := obs.Status(ctx)
	if err != nil {
		o.logger.WarnContext(ctx, "checkpoint bucket configuration unreadable", "bucket", CheckpointBucket, "error", err)
		return
	}
	bs, ok := st.(*jetstream.ObjectBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return
	}
	have := bs.StreamInfo().Config
	if have.Replicas >= cfg.Replicas && max(have.MaxBytes, 0) == max(cfg.MaxBytes, 0) {
		return
	}
	o.logger.WarnContext(ctx, "checkpoint bucket configuration differs from this process's; keeping it (the administrator's setup, --setup-streams, manages it)",
		"bucket", CheckpointBucket, "replicas", have.Replicas, "want_replicas", cfg.Replicas,
		"max_bytes", have.MaxBytes, "want_max_bytes", cfg.MaxBytes)
}

// objectName is this replica's object of projection name.
func (o *ObjectCheckpoints) objectName(name string) string { return name + "@" + o.replica }

// Put implements CheckpointStore: it deletes the projection's superseded objects (see
// ObjectCheckpoints), replaces this replica's object of the projection, then deletes those the new
// one superseded.
func (o *ObjectCheckpoints) Put(ctx context.Context, name string, r io.Reader) error {
	ctx, cancel := withTransferDeadline(ctx)
	defer cancel()
	obs, err := o.open(ctx)
	if err != nil {
		return err
	}
	// Large chunks: a restore reads hundreds of megabytes, and each chunk is one message.
	own := o.objectName(name)
	if err := o.pruneWithin(ctx, obs, name, own); err != nil {
		o.logger.WarnContext(ctx, "superseded checkpoints not deleted before writing a checkpoint", "projection", name, "error", err)
	}
	meta := jetstream.ObjectMeta{Name: own, Opts: &jetstream.ObjectMetaOptions{ChunkSize: checkpointChunk}}
	if _, err := obs.Put(ctx, meta, r); err != nil {
		return fmt.Errorf("eventstore: checkpoint %s: %w", own, err)
	}
	if err := o.pruneWithin(ctx, obs, name, own); err != nil {
		o.logger.WarnContext(ctx, "superseded checkpoints not deleted; the next checkpoint tries again", "projection", name, "error", err)
	}
	return nil
}

// checkpointPruneTimeout bounds each pruning of a Put. Pruning is best effort, and listing a bucket
// can hang until its context ends (nats.go's object-store listing waits forever on an empty bucket
// whose last-message lookup failed, as on a stream without a leader yet): the write must keep its time.
const checkpointPruneTimeout = 15 * time.Second

// pruneWithin is prune within checkpointPruneTimeout.
func (o *ObjectCheckpoints) pruneWithin(ctx context.Context, obs jetstream.ObjectStore, name, own string) error {
	ctx, cancel := context.WithTimeout(ctx, checkpointPruneTimeout)
	defer cancel()
	return o.prune(ctx, obs, name, own, o.now())
}

// prune deletes the objects of projection name, other than own, that a newer object superseded
// before now - checkpointTransfer: a restore reads the newest object when it starts, and has had
// that long to finish reading it.
func (o *ObjectCheckpoints) prune(ctx context.Context, obs jetstream.ObjectStore, name, own string, now time.Time) error {
	infos, err := o.list(ctx, obs, name)
	if err != nil {
		return err
	}
	cutoff := now.Add(-checkpointTransfer)
	superseded := false
	var errsOut []error
	for _, info := range infos { // newest first
		if superseded && info.Name != own {
			if err := obs.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				errsOut = append(errsOut, fmt.Errorf("delete %s: %w", info.Name, err))
			}
		}
		if !info.ModTime.After(cutoff) {
			superseded = true // every older object was superseded by this one before the cutoff
		}
	}
	return errors.Join(errsOut...)
}

// list returns the objects of projection name (<name>@<replica>, and <name> as earlier releases
// named it), newest first.
func (o *ObjectCheckpoints) list(ctx context.Context, obs jetstream.ObjectStore, name string) ([]*jetstream.ObjectInfo, error) {
	all, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: checkpoints of %s: %w", name, err)
	}
	var out []*jetstream.ObjectInfo
	for _, info := range all {
		if info.Name == name || strings.HasPrefix(info.Name, name+"@") {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b *jetstream.ObjectInfo) int {
		return cmp.Or(b.ModTime.Compare(a.ModTime), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Checkpoints implements CheckpointSet.
func (o *ObjectCheckpoints) Checkpoints(ctx context.Context, name string) ([]CheckpointCandidate, error) {
	obs, err := o.open(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := o.list(ctx, obs, name)
	if err != nil {
		return nil, err
	}
	out := make([]CheckpointCandidate, len(infos))
	for i, info := range infos {
		key := info.Name
		out[i] = CheckpointCandidate{Key: key, Written: info.ModTime, Open: func(ctx context.Context) (io.ReadCloser, error) {
			return o.get(ctx, key)
		}}
	}
	return out, nil
}

// Get implements CheckpointStore: the newest of the projection's objects.
func (o *ObjectCheckpoints) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	cands, err := o.Checkpoints(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(cands) == 0 {
		return nil, ErrNoCheckpoint
	}
	return cands[0].Open(ctx)
}

// get reads the object key.
func (o *ObjectCheckpoints) get(ctx context.Context, key string) (io.ReadCloser, error) {
	ctx, cancel := withTransferDeadline(ctx)
	obs, err := o.open(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	res, err := obs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		cancel()
		return nil, ErrNoCheckpoint
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("eventstore: checkpoint %s: %w", key, err)
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
// as the runner found it; from a CheckpointSet, the newest of its checkpoints that is valid.
// Whatever fails is logged, and the runner rebuilds from its position.
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
	name := r.p.Name()
	cands := []CheckpointCandidate{{Key: name, Open: func(ctx context.Context) (io.ReadCloser, error) { return c.store.Get(ctx, name) }}}
	if set, ok := c.store.(CheckpointSet); ok {
		var err error
		if cands, err = set.Checkpoints(ctx, name); err != nil {
			r.s.logger.WarnContext(ctx, "checkpoints unreadable; rebuilding the projection", "projection", name, "error", err)
			return
		}
	}
	for i, cand := range cands {
		start := time.Now()
		pos, err := r.tryRestore(ctx, cp, cand, info)
		var ps panicked
		switch {
		case err == nil:
			r.mu.Lock()
			r.pos, r.startPos = pos.Position, pos.Position
			r.mu.Unlock()
			c.last = time.Now()
			r.s.logger.InfoContext(ctx, "projection restored from checkpoint", "projection", name, "stream", r.stream, "checkpoint", cand.Key,
				"position", pos.Position, "written", pos.Written, "took", time.Since(start))
			return
		case errors.Is(err, ErrNoCheckpoint) && len(cands) == 1:
			r.s.logger.InfoContext(ctx, "no checkpoint; rebuilding the projection", "projection", name, "stream", r.stream)
			return
		case errors.As(err, &ps):
			// Restore may have changed part of the state: no other checkpoint is tried.
			r.s.logger.WarnContext(ctx, "checkpoint not restored; rebuilding the projection", "projection", name, "checkpoint", cand.Key, "error", err)
			return
		case i+1 < len(cands):
			r.s.logger.WarnContext(ctx, "checkpoint not restored; trying an older one", "projection", name, "checkpoint", cand.Key, "error", err)
		default:
			r.s.logger.WarnContext(ctx, "checkpoint not restored; rebuilding the projection", "projection", name, "checkpoint", cand.Key, "error", err)
			return
		}
	}
	r.s.logger.InfoContext(ctx, "no checkpoint; rebuilding the projection", "projection", name, "stream", r.stream)
}

// tryRestore restores cp from the checkpoint cand when it is valid and belongs to the runner over
// the stream info, and returns its header. A Restore that panicked is a panicked error.
func (r *Runner) tryRestore(ctx context.Context, cp Checkpointer, cand CheckpointCandidate, info *jetstream.StreamInfo) (CheckpointInfo, error) {
	rc, err := cand.Open(ctx)
	if err != nil {
		return CheckpointInfo{}, err
	}
	defer rc.Close()
	cr, err := NewCheckpointReader(rc)
	if err != nil {
		return CheckpointInfo{}, err
	}
	if why := r.foreign(cr.Info, info); why != "" {
		return CheckpointInfo{}, fmt.Errorf("checkpoint ignored: %s", why)
	}
	if err := safeRestore(cp, cr); err != nil {
		return CheckpointInfo{}, err
	}
	return cr.Info, nil
}

// panicked is the error of a Restore that panicked.
type panicked struct{ v any }

func (p panicked) Error() string { return fmt.Sprintf("restore panicked: %v", p.v) }

// safeRestore calls Restore, turning a panic into a panicked error.
func safeRestore(cp Checkpointer, cr *CheckpointReader) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicked{v}
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
