// One image build at a time per coved, shared by everyone who asks for one while it runs. A caller
// that joins a running build gets that build's progress from then on, under its own subject and
// progress token; a `force` request during a build that is not forced is not folded into it (the
// running build may well use the cache), but runs as soon as that build ends, once for every
// forced caller that arrived meanwhile.

/** Progress as the image build reports it. */
export type BuildProgress = (step: string, message: string, fraction: number) => void;

export interface BuildRequest {
  /** Rebuild even when a cached image matches. */
  force: boolean;
  /** Check every file's hash of a cached image, not only the manifest's presence and sizes. */
  fullVerify: boolean;
  /** This caller's progress: called for every step of the build it ends up waiting for. */
  onProgress?: BuildProgress;
}

/** What runs one build: told whether to force it and where its progress goes. */
export type BuildFn<R> = (force: boolean, fullVerify: boolean, onProgress: BuildProgress) => Promise<R>;

interface Run<R> {
  force: boolean;
  fullVerify: boolean;
  listeners: Set<BuildProgress>;
  /** Resolves with the run's result; exists from the moment the run is planned. */
  done: Promise<R>;
  resolve(v: R): void;
  reject(e: unknown): void;
}

export class ImageBuilds<R> {
  private current: Run<R> | null = null;
  /** A forced build that waits for the current one to end. */
  private queued: Run<R> | null = null;

  constructor(private readonly build: BuildFn<R>) {}

  /** True while a build runs or waits to run (prune must not remove images meanwhile). */
  get busy(): boolean {
    return this.current !== null || this.queued !== null;
  }

  /** Starts a build, or joins the one that will give this caller what it asked for. */
  run(req: BuildRequest): Promise<R> {
    const join = (r: Run<R>): Promise<R> => {
      if (req.onProgress) r.listeners.add(req.onProgress);
      // A queued run has not started: it can still verify in full for a caller that wants it.
      if (r !== this.current) r.fullVerify ||= req.fullVerify;
      return r.done;
    };
    // Between a build's end and the queued forced one's start: the forced one serves everyone.
    if (!this.current && this.queued) return join(this.queued);
    if (!this.current) {
      const r = this.plan(req.force, req.fullVerify);
      if (req.onProgress) r.listeners.add(req.onProgress);
      this.launch(r);
      return r.done;
    }
    // The running build serves anyone who does not force, and a forced caller if it is forced too.
    if (!req.force || this.current.force) return join(this.current);
    if (this.queued) return join(this.queued);
    const queued = this.plan(true, req.fullVerify);
    this.queued = queued;
    const startQueued = () => {
      this.queued = null;
      this.launch(queued);
    };
    this.current.done.then(startQueued, startQueued);
    return join(queued);
  }

  private plan(force: boolean, fullVerify: boolean): Run<R> {
    const r = { force, fullVerify, listeners: new Set<BuildProgress>() } as Run<R>;
    r.done = new Promise<R>((resolve, reject) => {
      r.resolve = resolve;
      r.reject = reject;
    });
    return r;
  }

  private launch(r: Run<R>): void {
    this.current = r;
    const progress: BuildProgress = (step, message, fraction) => {
      for (const l of r.listeners) l(step, message, fraction);
    };
    const end = () => {
      if (this.current === r) this.current = null;
    };
    Promise.resolve()
      .then(() => this.build(r.force, r.fullVerify, progress))
      .then(
        (v) => {
          end();
          r.resolve(v);
        },
        (e: unknown) => {
          end();
          r.reject(e);
        },
      );
  }
}
