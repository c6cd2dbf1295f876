// The MGRIT engine (docs/algorithm.md section 3): FAS V- and F-cycles with F / FCF
// / F(CF)^k relaxation over a Hierarchy, driven only through the Propagator
// interface, with residual history and per-level step counters. The same
// engine solves the forward and (through an index-reversing propagator) the
// adjoint problem.
//
// Work accounting (what "no wasted work" means here). An F-sweep of an
// interval that is followed by a C-point also steps once more, from the last
// F-point onto the C-point, and caches that value P_c = Phi(u_{cm-1}) (the
// "prediction"); C-relaxation (u_cm = P_c + g_cm) and the C-point residual
// (r_c = g_cm + P_c - u_cm) then cost no step. A full finest-level F-sweep with
// predictions therefore costs exactly N steps. An F-sweep is skipped when the
// level's F-points and predictions are already consistent with its C-points
// (e.g. the F-interpolation that ends a cycle is the F-relaxation that starts
// the next). The coarse right-hand side needs Phi^c(v_{j-1}) at every coarse
// point; where j-1 is a coarse C-point that value is also the first step of the
// coarse F-sweep, so it is kept and reused.
//
// Step counts per V-cycle (derivation in mgrit.cpp next to vcycle()):
//   N_l intervals on level l, m_l its factor, k_l the number of CF pairs of its
//   relaxation F(CF)^{k_l}, NC_l = N_{l+1}, I_l = number of non-empty
//   F-intervals of level l (NC_l, plus 1 if m_l does not divide N_l), L the
//   coarsest level:
//     level 0        : (k_0 + 1) N                       (relaxation's first F reused)
//     level 0<l<L    : N_l (FAS rhs) + (N_l - I_l) + k_l N_l (relaxation)
//                      + (N_l - NC_l) (F-interpolation)
//     level L (>0)   : N_L (FAS rhs) + N_L - 1 (serial solve, first step reused)
//   plus N finest-level steps once at the start of every iterate()/solve() call
//   (the initial F-sweep that also yields residual_history()[0]).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "layerparallel/comm.h"
#include "layerparallel/hierarchy.h"
#include "layerparallel/propagator.h"
#include "layerparallel/state_space.h"

namespace layerparallel {

/// Options of the MGRIT solver. Validated by Mgrit's constructor (and by
/// validate()); a bad value throws std::invalid_argument naming the option.
struct MgritOptions {
  /// Maximum number of grid levels (1 = serial propagation).
  int max_levels = 10;
  /// Coarsening factor on levels >= 1 (>= 2).
  int cfactor = 2;
  /// Coarsening factor on the finest level; -1 = same as cfactor.
  int cfactor_fine = -1;
  /// Stop coarsening once a level has at most this many intervals (>= 1).
  int min_coarse = 2;
  /// Relaxation per level, each of the form F(CF)^k: "F", "FCF", "FCFCF", ...
  /// (case-insensitive). Entry l applies to level l; levels past the end of
  /// the list use the last entry. Empty = {"F", "FCF"}: F on the finest level,
  /// FCF on all coarser ones. {"FCF"} means FCF everywhere.
  std::vector<std::string> relax;
  /// "V" or "F" (F-cycle: on every level, an F-cycle below then a V-cycle below).
  std::string cycle = "V";
  /// Absolute stop tolerance on the finest C-point residual norm (0 = none).
  double tol = 0.0;
  /// Relative stop tolerance, relative to the first recorded residual of the
  /// call (residual_history()[0], or [1] when [0] was not computed); 0 = none.
  double rtol = 0.0;
  /// Maximum number of cycles per solve() call.
  int max_iter = 100;
  /// Nested iteration: when the iterate is the default guess, build the first
  /// guess by solving the re-discretised problem on the coarsest level and
  /// interpolating upwards with one V-cycle on every intermediate level.
  bool fmg = false;
  /// When the iterate is the default guess (and fmg is off), skip all
  /// relaxation and residual work of the first down-cycle: coarse levels get the
  /// injected guess and the re-discretised right-hand side (XBraid's skip).
  bool skip_first_down = false;
  /// "all": keep every finest-level point; "cpoints": keep only the finest
  /// C-points between cycles (F-points are recomputed by finalize()).
  std::string store = "all";
  /// Threads over the intervals of a level (0 = OpenMP default). The propagator
  /// is called concurrently for different intervals; with nested OpenMP off
  /// (the default) its own parallel loops then run serially.
  int threads = 0;
  /// Compute the finest C-point residual norm after every cycle of iterate()
  /// (one all-reduce per cycle when the layers are distributed). false: a
  /// fixed number of cycles records NaN and saves the reductions; solve()
  /// always computes them (it needs them to stop).
  bool compute_residuals = true;

  /// Throws std::invalid_argument naming the first bad option.
  void validate() const;
  /// Number of CF pairs k of the relaxation of `level` (F(CF)^k).
  int relax_cf_pairs(int level) const;
};

/// Which process owns which part of the time axis. Position q = 0..P-1 (in the
/// direction the problem steps) owns the fine steps [step_bounds[q],
/// step_bounds[q+1]), i.e. it computes the points (step_bounds[q],
/// step_bounds[q+1]] (position 0 also holds point 0), on every level the
/// points whose fine index lies there, and talks to the others through
/// Comm rank ranks[q]. No divisibility is needed and a position may own no
/// point of a level (or no step at all). An empty Partition means "this
/// process owns everything" (the Comm then only sums residual norms).
struct Partition {
  std::vector<int> step_bounds;  ///< P + 1 non-decreasing entries from 0 to N
  std::vector<int> ranks;        ///< P distinct Comm ranks
  int tag = 0;                   ///< base of this solver's message tags (>= 0)

  bool empty() const { return ranks.empty(); }
  /// `parts` contiguous blocks of n_steps steps as split() makes them, block r on
  /// rank r. reversed: the problem steps backwards through the blocks (the
  /// adjoint of a network whose layers are split that way): rank r then owns
  /// the steps [N - end_r, N - begin_r) and sits at position parts - 1 - r.
  static Partition contiguous(int n_steps, int parts, bool reversed = false, int tag = 0);
  /// Throws std::invalid_argument unless the partition fits n_steps and `comm_size`.
  void validate(int n_steps, int comm_size) const;
};

/// Number of CF pairs k in a relaxation string F(CF)^k; throws
/// std::invalid_argument for anything else.
int parse_relax(const std::string& s);

/// Exact serial forward propagation u_{i+1} = Phi(u_i) on level 0:
/// `out` receives (n_steps + 1) states, out[0] = u0. N calls of prop.step.
/// u0 and out are in the propagator's memory (prop.space()).
void serial_propagate(Propagator& prop, int n_steps, const double* u0, double* out);

/// MGRIT solver of u_0 = g_0, u_i = Phi_{i-1}(u_{i-1}) (i = 1..N) for one
/// propagator. Typical use: set_initial(u0); solve(); state(i) / trajectory().
///
/// Iterate semantics: the iterate is the set of finest-level C-point values;
/// F-points are always determined from them by F-relaxation. After every cycle
/// (and after finalize()) the stored F-points equal the F-relaxation of the
/// C-points. Point 0 is fixed to u0 and never changes in a cycle.
class Mgrit {
 public:
  /// `prop` and `comm` must outlive the solver; comm == nullptr uses a
  /// SerialComm. Throws std::invalid_argument for bad options or n_steps < 1.
  /// With a non-empty `part` the time axis is distributed: every process of
  /// the partition constructs its solver with the same arguments and makes the
  /// same sequence of calls; each stores and computes only the points it owns
  /// (plus one ghost point, the one before its first), exchanging boundary
  /// values with its neighbours on every level by non-blocking messages.
  Mgrit(Propagator& prop, int n_steps, MgritOptions opts = {}, Comm* comm = nullptr, Partition part = {});

  /// Not copyable (holds references and large buffers).
  Mgrit(const Mgrit&) = delete;
  Mgrit& operator=(const Mgrit&) = delete;

  /// Every state pointer passed to or returned by the solver (set_initial,
  /// warm_start, state, trajectory) is in the propagator's memory, prop.space()
  /// (host memory unless the propagator keeps its states on a device).
  ///
  /// Sets the fixed value u_0 (state_size() doubles). If the iterate has not
  /// been initialised yet, every point is set to u0 (the default guess);
  /// otherwise only point 0 changes and the rest of the iterate is kept.
  /// Distributed: every process passes the same u0 whenever the default guess
  /// is (re)filled; otherwise only the owner of point 0 reads it.
  void set_initial(const double* u0);
  /// Replaces the iterate by `all_points` ((N + 1) states, point i at
  /// all_points + i * state_size(); distributed: only the owned entries are
  /// read); entry 0 is ignored (u_0 stays the value of
  /// set_initial, which must have been called). With store = "cpoints" only
  /// the C-point values are kept.
  void warm_start(const double* all_points);
  /// Discards the iterate and refills the default guess (u0 at every point), so
  /// fmg / skip_first_down apply again. Requires set_initial().
  void reset();

  /// Runs exactly k cycles (k >= 0) and starts a new residual history. Every
  /// call begins with a finest-level F-sweep (N steps) that yields
  /// residual_history()[0] and that the first cycle reuses; nothing cached
  /// from earlier calls is trusted, so the propagator may change between calls
  /// (e.g. new weights in one-shot training).
  void iterate(int k) { iterate(k, false); }
  /// iterate(k) that leaves the residual reductions to the caller, so that it can
  /// fold them into one reduction with others (no synchronisation between
  /// processes inside the call). Afterwards pending_norm_slots() holds, for every
  /// computed residual, one slot per finest C-point c >= 1 (this process's |r_c|^2
  /// where it owns c, else 0); residual_history() is -1 there until
  /// finish_norms(reduced) receives the all-reduced slots.
  void iterate(int k, bool defer_norms);
  const std::vector<double>& pending_norm_slots() const { return pending_; }
  /// See iterate(k, true): `reduced` holds pending_norm_slots().size() summed values.
  void finish_norms(const double* reduced);
  /// Like iterate(), but runs cycles until the residual is <= tol, <= rtol *
  /// first residual, or exactly 0 (returns true), or max_iter cycles were run
  /// or the residual is not finite (returns false). Checks history[0] first,
  /// so a converged warm start runs no cycle.
  bool solve();
  /// Overwrites the iterate with the exact serial solution (N finest-level
  /// steps, counted on level 0). The residual history is not touched.
  void serial_solve();

  /// Finest C-point residual norms of the last iterate()/solve() call,
  /// sqrt(sum_c |r_c|^2) over C-points c >= 1 with r_c = Phi(u_{cm-1}) - u_{cm}
  /// evaluated on the F-relaxed iterate (|.| = Propagator::norm; summed in
  /// C-point order, so with a Partition the value has the one-process rounding;
  /// without one the sum is all-reduced over the Comm). Entry 0: the iterate at the start of the call
  /// (after its F-relaxation, which the first cycle needs anyway, so it is free);
  /// NaN when not computed (skip_first_down on the default guess, or a
  /// one-level hierarchy). Entry k: after cycle k. On a one-level hierarchy a
  /// cycle is the serial solve and its residual is 0.
  const std::vector<double>& residual_history() const { return history_; }
  /// rho_k = history[k] / history[k-1] for k = 1..size-1 (NaN where undefined).
  std::vector<double> convergence_factors() const;
  /// Cycles run by the last iterate()/solve() call.
  int iterations() const { return static_cast<int>(history_.size()) - (history_.empty() ? 0 : 1); }

  /// prop.step calls per level since construction or reset_counters().
  const std::vector<long long>& steps_per_level() const { return steps_; }
  /// Sum of steps_per_level().
  long long total_steps() const;
  /// Zeroes steps_per_level().
  void reset_counters();

  /// Makes the full finest trajectory consistent with the C-points: F-relaxes
  /// if the stored F-points are stale (e.g. after warm_start or set_initial on
  /// an iterated state) and, with store = "cpoints", recomputes all F-points
  /// into a trajectory buffer. Steps are counted on level 0. Cheap no-op when
  /// nothing changed.
  void finalize();
  /// Pointer to fine point i (state_size() doubles) of the finalized iterate;
  /// calls finalize() first. Valid until the next call that changes the iterate.
  /// Distributed: i must be owned or the ghost point (owned_points().begin - 1).
  const double* state(int i);
  /// Copies the finalized points into out ((N + 1) * state_size(), point i at
  /// out + i * state_size()): all of them, or the owned ones when distributed.
  void trajectory(double* out);
  /// Points of `level` this process owns (all of them without a partition).
  Range owned_points(int level = 0) const { return lv_.at(static_cast<std::size_t>(level)).own; }

  /// The grid hierarchy in use.
  const Hierarchy& hierarchy() const { return hier_; }
  /// The validated options.
  const MgritOptions& options() const { return opts_; }
  /// Changes the stopping tolerances of later solve() calls (callers that scale
  /// a relative tolerance by the size of each new initial value).
  void set_tolerances(double tol, double rtol);
  /// Changes the most cycles of later solve() calls (>= 0).
  void set_max_iter(int max_iter);
  /// Number of fine intervals N (points 0..N).
  int n_steps() const { return hier_.n_intervals(0); }
  /// Doubles per state (the propagator's state_size()).
  std::size_t state_size() const { return ss_; }

 private:
  // The implementation is split over cpp/src/mgrit*.cpp (list in
  // cpp/src/mgrit_internal.h); each group below names its file.

  // Per-level layout and storage (mgrit_storage.cpp).
  struct Level {
    Range own;                  // owned level points
    int left = -1, right = -1;  // Comm ranks of the nearest owners before / after (-1: none)
    int cbeg = 0;               // first owned C-point index (C-point c is level point c m)
    int fbeg = 0;               // first F-interval c whose point c m + 1 is owned
    StateBuffer u;              // level 0 only: owned point values (store=cpoints: C-points only);
                                // coarse points are finest C-points and live there too
    StateBuffer ghost;          // the value of point own.begin - 1 (owned by `left`)
    StateBuffer tail;           // last owned F-point when F-points are not stored
    StateBuffer g;              // right-hand side at owned points (levels >= 1)
    StateBuffer pred;           // P_c = Phi(u_{cm-1}) per owned C-point c
    StateBuffer first;          // Phi(u_{cm}) from the FAS rhs, per F-interval c from fbeg
    bool fconsistent = false;   // F-points consistent with C-points and g
    bool pred_valid = false;    // pred consistent with the current F-points
    bool first_valid = false;   // first consistent with the current C-points
  };
  double* point(int level, int j);
  double* rhs_at(int level, int j);
  double* pred_at(int level, int c);
  double* first_at(int level, int c);
  double* traj_at(int i);
  void copy(const double* src, double* dst) { sp_.copy(dst, src, ss_); }
  /// The values on `level` changed: its F-points, predictions and first steps are stale.
  void mark_changed(int level = 0);

  // Relaxation and forward substitution (mgrit_relax.cpp).
  // One interval's chain of steps, for propagators that fuse the chains of a level.
  struct ChainPlan {
    std::vector<int> idx;
    std::vector<double*> outs;
    std::vector<const double*> rhs;
    const double* in = nullptr;
    bool have_g = false;
    // The reused first step, to run before the chain: pre_dst = pre_first (+ pre_g).
    double* pre_dst = nullptr;
    const double* pre_first = nullptr;
    const double* pre_g = nullptr;
  };
  long long sweep_interval(int level, int c, bool with_pred, bool reuse, bool scratch, bool to_traj,
                           std::vector<ChainPlan>* plans = nullptr);
  void fsweep(int level, bool with_pred, bool use_first, bool to_traj = false);
  void crelax(int level);
  void relax(int level);
  void chain_solve(int level, bool to_traj);
  long long parallel(int n, const std::function<long long(int)>& body);

  // FAS transfer and the finest residual (mgrit_fas.cpp).
  void restrict_fas(int level);
  void restrict_skip(int level);
  void correct(int level);
  double residual_norm_from_pred();  // finest level, needs pred_valid

  // Messages of one state (mgrit_comm.cpp). With a non-host StateSpace they go
  // through a host copy: a send downloads at once, a receive uploads when it is
  // completed.
  int post_send(const double* src, int dest, int tag);
  int post_recv(double* dst, int source, int tag);
  void complete(int req);
  int tag(int level, int kind) const { return part_.tag + 4 * level + kind; }

  // The driver (mgrit.cpp).
  void require_initialized(const char* what) const;
  void begin_call();
  void run_cycle();
  void vcycle(int level, bool need_pred);
  void fcycle(int level);
  void final_fsweep(int level, bool with_pred);
  void coarsest_solve(int level);
  void fmg_guess();
  void add_steps(int level, long long n) { steps_[level] += n; }

  Propagator& prop_;
  StateSpace& sp_;  // where the states live (prop_.space())
  SerialComm own_comm_;
  Comm* comm_;
  MgritOptions opts_;
  Hierarchy hier_;
  Partition part_;
  std::size_t ss_;
  bool cpoints_only_;
  bool fcycle_;
  std::vector<int> cf_pairs_;
  std::vector<Level> lv_;
  std::vector<long long> steps_;
  std::vector<double> history_;
  StateBuffer u0_;
  StateBuffer traj_;             // owned trajectory for store = "cpoints"
  bool traj_valid_ = false;      // traj_ holds the F-relaxation of the current C-points
  bool initialized_ = false;     // set_initial has been called
  bool have_iterate_ = false;    // the iterate has been filled
  bool guess_default_ = false;   // the iterate is the untouched default guess
  bool skipping_ = false;        // inside the skipped first down-cycle
  bool last_cycle_ = false;      // the last cycle of a fixed-budget call (Propagator::final_sweep)
  bool norms_ = true;            // this call computes residual norms
  bool deferring_ = false;       // residual sums stay local in this call
  bool norms_pending_ = false;   // history_ holds -1 placeholders until finish_norms()
  std::vector<double> pending_;  // deferred residual slots
  struct Staged {  // a message staged through a host copy (mgrit_comm.cpp)
    int req;
    std::vector<double> host;
    double* dst;  // receive: where the value goes on completion (nullptr: a send)
  };
  std::vector<Staged> staged_;
  StateBuffer scratch_pair_;  // store = cpoints on device states: the two alternating F-point buffers
};

}  // namespace layerparallel
