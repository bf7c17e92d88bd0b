using Ullme.MLNet.IO;
using Ullme.MLNet;
using Ullme.MLNet.Training;

namespace Ullme.Cli.Training;

/// <summary>
/// The folders of one <c>ullme train</c> run and the rules that keep them consistent.
/// <para>
/// Checkpoints (and the running loss log) go to <c>&lt;output&gt;/checkpoints</c> unless <c>--checkpoint-dir</c> says
/// otherwise. The finished output is never written in place: the model, <c>losses.csv</c>, <c>losses.png</c> and
/// <c>training.json</c> are written into a hidden staging folder next to the output, which then replaces the output
/// folder by renames (the checkpoints are carried over). A run that fails or is killed leaves either the previous
/// output or none — never a half-written model. A run killed during that hand-over is finished or rolled back by
/// the next run on the same output (<see cref="RecoverInterruptedPublish"/>), which also removes the staging folders
/// of killed runs.
/// </para>
/// </summary>
internal sealed class RunFolders
{
    public const string CheckpointsFolder = "checkpoints";
    public const string SummaryFile = "training.json";

    private RunFolders(string output, string checkpoints, bool defaultCheckpoints)
    {
        Output = output;
        Checkpoints = checkpoints;
        CheckpointsInsideOutput = defaultCheckpoints;
    }

    /// <summary>The output folder (full path).</summary>
    public string Output { get; }

    /// <summary>The checkpoint folder (full path).</summary>
    public string Checkpoints { get; }

    /// <summary>Whether the checkpoints live in the output folder (the default).</summary>
    public bool CheckpointsInsideOutput { get; }

    /// <summary>
    /// Resolves and checks the folders before any work: an output folder with content is only reused with
    /// <paramref name="resume"/> (continue its run) or <paramref name="overwrite"/> (start over); checkpoints of an
    /// earlier run are only ignored with <paramref name="overwrite"/>, which deletes them.
    /// </summary>
    public static RunFolders Prepare(string output, string? checkpointDir, bool resume, bool overwrite)
    {
        string full = Ullme.MLNet.IO.PathGuard.Normalize(output);
        if (File.Exists(full)) throw new UllmeException($"--output '{output}' is a file; give a folder.");
        bool inside = checkpointDir is null;
        RecoverInterruptedPublish(full, inside);
        string checkpoints = inside ? Path.Combine(full, CheckpointsFolder) : Ullme.MLNet.IO.PathGuard.Normalize(checkpointDir!);
        if (Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any())
        {
            bool ours = File.Exists(Path.Combine(full, SummaryFile)) || Directory.Exists(Path.Combine(full, CheckpointsFolder));
            if (!resume && !overwrite)
                throw new UllmeException($"--output folder '{output}' is not empty. Pass --resume to continue the run it holds, or --overwrite to replace it.");
            if (resume && !overwrite && !ours)
                throw new UllmeException($"--output folder '{output}' is not empty and holds no ullme training run (no {SummaryFile}, no {CheckpointsFolder}/); choose another folder or pass --overwrite.");
        }
        if (!resume && TrainingCheckpoint.FindLatest(checkpoints) is not null)
        {
            if (!overwrite)
                throw new UllmeException($"Checkpoint folder '{checkpoints}' holds checkpoints of an earlier run. Pass --resume to continue it, or --overwrite to start over (deletes them).");
            foreach (var dir in Directory.GetDirectories(checkpoints, TrainingCheckpoint.FolderPrefix + "*"))
                Directory.Delete(dir, recursive: true);
        }
        RemoveStaleStaging(full);
        if (!resume && File.Exists(Path.Combine(checkpoints, LossLog.FileName)))
            File.Delete(Path.Combine(checkpoints, LossLog.FileName));
        return new RunFolders(full, checkpoints, inside);
    }

    /// <summary>Deletes the staging folders (<c>.&lt;output&gt;.staging-&lt;pid&gt;</c>) of killed runs whose process is gone.</summary>
    private static void RemoveStaleStaging(string output) => AtomicFolder.Recover(output);

    /// <summary>A fresh, empty staging folder next to the output.</summary>
    public string CreateStaging() => AtomicFolder.CreateStaging(Output);

    /// <summary>Deletes a staging folder after a failure.</summary>
    public static void Discard(string staging) => AtomicFolder.TryDelete(staging);

    /// <summary>
    /// Makes the complete <paramref name="staging"/> folder the output (<see cref="AtomicFolder.Publish"/>): the old
    /// output (if any) is renamed aside, the staging folder renamed into place, the checkpoints moved over from the old
    /// output, and the old output deleted.
    /// </summary>
    public void Publish(string staging)
    {
        FaultInjection.Reach("export-staging");
        string? replaced = AtomicFolder.Publish(staging, Output, afterMoveAside: () => FaultInjection.Reach("export-publish"), keepReplaced: true);
        if (replaced is null) return;
        FaultInjection.Reach("export-checkpoints");
        if (CheckpointsInsideOutput && Directory.Exists(Path.Combine(replaced, CheckpointsFolder)))
            Directory.Move(Path.Combine(replaced, CheckpointsFolder), Checkpoints);
        Directory.Delete(replaced, recursive: true);
    }

    /// <summary>
    /// Repairs what a run killed during <see cref="Publish"/> (or while writing its staging folder) left next to
    /// <paramref name="output"/>, for siblings of processes that no longer run (<see cref="AtomicFolder.Recover"/>): the
    /// old output moved aside while the new one was not yet in place is moved back (the run is then resumed or redone
    /// from its checkpoints); an old output whose replacement is in place gives its checkpoints to it and is deleted;
    /// staging folders are deleted.
    /// </summary>
    internal static void RecoverInterruptedPublish(string output, bool checkpointsInside) =>
        AtomicFolder.Recover(output, beforeDiscard: replaced =>
        {
            string oldCheckpoints = Path.Combine(replaced, CheckpointsFolder), newCheckpoints = Path.Combine(output, CheckpointsFolder);
            if (checkpointsInside && Directory.Exists(oldCheckpoints) && !Directory.Exists(newCheckpoints))
                Directory.Move(oldCheckpoints, newCheckpoints);
        });
}
