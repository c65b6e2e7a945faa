using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Teacher;

/// <summary>Where an interrupted pretraining run stood at its last checkpoint.</summary>
/// <param name="Step">The last finished optimizer step.</param>
/// <param name="SmoothedLoss">The exponentially smoothed loss at that step.</param>
/// <param name="TailLossSum">Sum of the losses of the final tenth of the steps seen so far (the returned mean's numerator).</param>
internal sealed record PretrainingState(int Step, double SmoothedLoss, double TailLossSum);

/// <summary>What a pretraining run's fingerprint covers, group by group, so that a refusal can name what differs (each setting with both values).</summary>
internal sealed record PretrainingRunIdentity(Dictionary<string, string> Settings, string Corpus, string StartingWeights);

/// <summary>
/// Resumable checkpoints of <see cref="TeacherPretrainer"/>: the model (Hugging Face layout), the AdamW state and a
/// progress file that carries a fingerprint of the run (options, corpus, starting weights) and the hashes of the weights
/// and optimizer state it names. A save writes the whole checkpoint into <see cref="NextCheckpointFolder"/> inside the
/// folder, the progress file last, and only then moves its files over the previous checkpoint's (renames, the progress
/// file last): a kill while it writes leaves the previous checkpoint whole (the unfinished one is deleted on resume), and
/// a kill while it moves leaves a complete next checkpoint, whose move the resume finishes. Files of two steps found
/// together anyway (changed by hand) are refused on resume, never loaded as a mix.
/// </summary>
internal sealed class PretrainingResume(string directory, string fingerprint, PretrainingRunIdentity identity)
{
    /// <summary>
    /// The checkpoints of the run these arguments describe in <paramref name="directory"/>: its fingerprint (what a
    /// checkpoint must match to resume) and the groups that fingerprint covers (named when they differ), both from one
    /// list of the settings.
    /// </summary>
    // seed: the one the run draws its windows and dropout masks from (Options.Seed, else the MLContext's).
    public static PretrainingResume For(string directory, TeacherPretrainerOptions o, int seed, int[] tokens, float[]? weights, TeacherModel model)
    {
        string I(FormattableString f) => FormattableString.Invariant(f);
        // In the fingerprint's order. The effective seed, not Options.Seed: without it a run under another MLContext seed
        // would continue with other windows.
        (string Name, string Value)[] settings =
        [
            ("Steps", I($"{o.Steps}")), ("BatchSize", I($"{o.BatchSize}")), ("SequenceLength", I($"{o.SequenceLength}")),
            ("LearningRate", I($"{o.LearningRate:R}")), ("MinLearningRateFraction", I($"{o.MinLearningRateFraction:R}")), ("WarmupSteps", I($"{o.WarmupSteps}")),
            ("WeightDecay", I($"{o.WeightDecay:R}")), ("Beta1", I($"{o.Beta1:R}")), ("Beta2", I($"{o.Beta2:R}")), ("GradientClipNorm", I($"{o.GradientClipNorm:R}")),
            ("seed", I($"{seed}")),
        ];
        string dropout = I($"{o.Dropout:R}");
        var tokenBytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(tokens.AsSpan());
        var weightBytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes((weights ?? []).AsSpan());

        // The fingerprint's format is fixed, so that earlier checkpoints resume: the settings, the starting weights, and
        // Dropout only when it is on (the field came later), then the token stream and its weights.
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes("v1|" + string.Concat(settings.Select(s => s.Value + "|")) + model.ContentHash + "|"
                                               + (o.Dropout > 0 ? $"dropout={dropout}|" : "")));
        hash.AppendData(tokenBytes);
        hash.AppendData(weightBytes);
        string fingerprint = Convert.ToHexStringLower(hash.GetHashAndReset());

        hash.AppendData(tokenBytes);
        hash.AppendData(weightBytes);
        string corpus = $"{tokens.Length} tokens{(weights is null ? "" : ", weighted")}, sha256 {Convert.ToHexStringLower(hash.GetHashAndReset())[..12]}";
        var named = settings.Append((Name: "Dropout", Value: dropout)).ToDictionary(s => s.Name, s => s.Value);
        return new PretrainingResume(directory, fingerprint, new PretrainingRunIdentity(named, corpus, model.ContentHash));
    }

    /// <summary>
    /// The settings, corpus and starting weights that differ between <paramref name="saved"/> and <paramref name="identity"/>,
    /// each with both values; null when the progress file holds none (written before they were kept).
    /// </summary>
    private static string? Differences(Saved saved, PretrainingRunIdentity identity)
    {
        if (saved.Settings is null || saved.Corpus is null || saved.StartingWeights is null) return null;
        var settings = identity.Settings.Keys.Union(saved.Settings.Keys)
            .Select(name => (name, saved.Settings.GetValueOrDefault(name), identity.Settings.GetValueOrDefault(name)));
        return SettingDifferences.Describe(settings
            .Append(("corpus", saved.Corpus, identity.Corpus))
            .Append(("starting weights", saved.StartingWeights, identity.StartingWeights)));
    }

    private const string ProgressFile = "pretrain-progress.json", OptimizerFile = "pretrain-optimizer.bin";

    /// <summary>The folder, inside the checkpoint folder, that a save writes the next checkpoint into before it replaces the previous one.</summary>
    internal const string NextCheckpointFolder = "pretrain-next-checkpoint";

    /// <summary>
    /// Finishes or discards a save that was stopped: a next checkpoint whose progress file was written is complete, and its
    /// files are moved in (again); one without is a save stopped while it wrote, and the folder still holds the previous checkpoint.
    /// </summary>
    private void FinishOrDiscardStoppedSave()
    {
        var next = Path.Combine(directory, NextCheckpointFolder);
        if (File.Exists(Path.Combine(next, ProgressFile))) Commit(next);
        else if (Directory.Exists(next)) Directory.Delete(next, recursive: true);
    }

    /// <summary>Moves the complete checkpoint in <paramref name="next"/> over the folder's, the progress file last, and deletes <paramref name="next"/>.</summary>
    private void Commit(string next)
    {
        TeacherCheckpoints.MoveSave(next, directory, heldBack: ProgressFile);
        File.Move(Path.Combine(next, ProgressFile), Path.Combine(directory, ProgressFile), overwrite: true);
        Directory.Delete(next, recursive: true);
    }

    /// <summary>Loads the last checkpoint into <paramref name="model"/> and <paramref name="optimizer"/>; null when there is none.</summary>
    /// <exception cref="InvalidOperationException">The checkpoint belongs to a different run.</exception>
    public PretrainingState? TryLoad(TeacherModel model, HeldAdamW optimizer, ComponentHost host)
    {
        FinishOrDiscardStoppedSave();
        var progressPath = Path.Combine(directory, ProgressFile);
        if (!File.Exists(progressPath)) return null;
        Saved saved;
        try
        {
            saved = JsonSerializer.Deserialize<Saved>(File.ReadAllText(progressPath)) ?? throw new JsonException("empty");
            if (string.IsNullOrEmpty(saved.Fingerprint)) throw new JsonException("no fingerprint");
        }
        catch (JsonException e) { throw new InvalidDataException($"{progressPath}: not a pretraining progress file ({e.Message}).", e); }
        if (saved.Fingerprint != fingerprint)
            throw new InvalidOperationException(Differences(saved, identity) is { } differences
                ? $"{progressPath}: the checkpoint in {directory} was written by a different pretraining run ({differences}). Delete the folder or set Resume = false to start over."
                : $"{progressPath}: the checkpoint in {directory} was written by a different pretraining run (fingerprint {saved.Fingerprint[..12]}…, this run {fingerprint[..12]}…: options, corpus or starting weights differ). Delete the folder or set Resume = false to start over.");
        host.Info($"Loading pretraining checkpoint of step {saved.Step} from {directory}.");
        using (var checkpoint = TeacherModel.Load(directory))
        using (no_grad())
        {
            var source = checkpoint.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
            foreach (var (name, parameter) in model.NamedParameters())
            {
                if (!source.TryGetValue(name, out var value) || !value.shape.SequenceEqual(parameter.shape))
                    throw new InvalidDataException($"{directory}: tensor '{name}' is missing or has another shape than the model being trained.");
                parameter.copy_(value);
            }
        }
        model.InvalidateContentHash();
        // A kill inside Save leaves the weights or optimizer state of a later step beside this progress file; resuming
        // from them at this step would mix two points of the run. (Progress files written before the hashes: unchecked.)
        const string Torn = "a checkpoint save was interrupted or the file was changed; delete the folder or set Resume = false to start over";
        if (saved.WeightsHash is { } weightsHash && weightsHash != model.ContentHash)
            throw new InvalidDataException($"{directory}: the weights in the folder are not the ones of step {saved.Step} that {ProgressFile} names ({Torn}).");
        var optimizerPath = Path.Combine(directory, OptimizerFile);
        if (saved.OptimizerHash is { } optimizerHash && (!File.Exists(optimizerPath) || optimizerHash != FileHash(optimizerPath)))
            throw new InvalidDataException($"{optimizerPath}: missing or not the optimizer state of step {saved.Step} that {ProgressFile} names ({Torn}).");
        optimizer.LoadState(optimizerPath);
        return new PretrainingState(saved.Step, saved.SmoothedLoss, saved.TailLossSum);
    }

    /// <summary>
    /// Writes the checkpoint of <paramref name="state"/> whole into <see cref="NextCheckpointFolder"/> (progress file last,
    /// so it only names complete checkpoints), then moves it over the previous one.
    /// </summary>
    public void Save(TeacherModel model, HeldAdamW optimizer, PretrainingState state)
    {
        // Written in place, a kill inside the save (the weights and the optimizer state take most of its time) left the
        // folder refused on resume (the weights or the save marker of the step being written beside the progress file of
        // the one before): the run lost all its progress.
        var next = Path.Combine(directory, NextCheckpointFolder);
        if (Directory.Exists(next)) Directory.Delete(next, recursive: true); // a save stopped while it wrote, of a run not resumed
        Directory.CreateDirectory(next);
        model.SaveCheckpoint(next);
        var optimizerPath = Path.Combine(next, OptimizerFile);
        // A temp file of its own (it was one fixed '.tmp' name, left behind by a failed save and shared by two writers).
        AtomicFile.WriteVia(optimizerPath, optimizer.SaveState);
        string optimizerHash = FileHash(optimizerPath);
        model.InvalidateContentHash(); // training moved the weights since the hash was last taken
        AtomicFile.WriteAllText(Path.Combine(next, ProgressFile), JsonSerializer.Serialize(
            new Saved(fingerprint, state.Step, state.SmoothedLoss, state.TailLossSum, DateTime.UtcNow, model.ContentHash, optimizerHash,
                identity.Settings, identity.Corpus, identity.StartingWeights)));
        Commit(next);
    }

    private static string FileHash(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    // WeightsHash: the saved weights' TeacherModel.ContentHash (the progress file names only these weights);
    // OptimizerHash: SHA-256 of the optimizer state file written with them.
    // Settings, Corpus, StartingWeights: the groups the fingerprint covers (PretrainingRunIdentity), so that a refusal names what differs.
    private sealed record Saved(string Fingerprint, int Step, double SmoothedLoss, double TailLossSum, DateTime SavedUtc,
        string? WeightsHash = null, string? OptimizerHash = null, Dictionary<string, string>? Settings = null, string? Corpus = null, string? StartingWeights = null);
}
