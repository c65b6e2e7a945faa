using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;

namespace RetriKT.MLNet.BlackBox;

/// <summary>One judged sample as the checkpoint keeps it.</summary>
/// <param name="Label">Intended label index.</param>
/// <param name="Text">First text.</param>
/// <param name="Text2">Second text (pair tasks).</param>
/// <param name="SoftLabel">The teacher's soft label (null when it gave none).</param>
/// <param name="Source">"logprobs" or "classify" (null when unlabelled).</param>
/// <param name="Dropped">Why it was dropped; null when kept.</param>
/// <param name="Tokens">Tokens its requests used (generation + classification).</param>
/// <param name="Failed">
/// Not a sample: a request for <paramref name="Label"/> that failed after its retries. Its draw of demonstrations and
/// temperature was made, so a resumed run replays it to go on where the draws left off.
/// </param>
internal sealed record CheckpointRecord(int Label, string Text, string? Text2, float[]? SoftLabel, string? Source, DropReason? Dropped, long Tokens, bool Failed = false)
{
    /// <summary>
    /// A request for <paramref name="label"/> that failed after its retries; <paramref name="tokens"/>: what its attempt had
    /// already been billed (a generation whose classification then failed).
    /// </summary>
    public static CheckpointRecord FailedRequest(int label, long tokens = 0) => new(label, "", null, null, null, null, tokens, Failed: true);
}

/// <summary>
/// The run's settings as the checkpoint's header keeps them: <paramref name="Hash"/> (SHA-256 of all of them) decides
/// whether a checkpoint resumes; <paramref name="Settings"/> holds each group of them (a long one as its own hash), so a
/// refused checkpoint names the groups that differ.
/// </summary>
internal sealed record RunFingerprint(string Hash, JsonObject Settings);

/// <summary>
/// Append-only JSONL: a header line with the run's fingerprint and labels (written atomically: temp file + rename),
/// then one line per judged sample (and one per request that failed after its retries), flushed as it is written, so a
/// crash loses only requests in flight. A torn last
/// line (a kill during a write) is cut off on reopening; a file from a run with other settings is refused. A run holds
/// <c>{path}.lock</c> (an exclusive lock, released and deleted when the run ends) from before it reads the file to its
/// end, so a second run on the same path is refused before it reads: two runs would each take the other's line in
/// flight for a torn one and cut it, then append their samples into one file, counted twice on resuming.
/// </summary>
internal sealed class BlackBoxCheckpoint : IDisposable
{
    private const string Magic = "retrikt_blackbox_checkpoint";
    /// <summary>Strict UTF-8: a damaged byte fails its line instead of reading as U+FFFD into a sample's text.</summary>
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private readonly StreamWriter? _writer;
    private readonly FileStream? _lock;

    public BlackBoxCheckpoint(string? path, RunFingerprint fingerprint, IReadOnlyList<string> labels)
    {
        if (path is null) return;
        Path = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        _lock = CheckpointLock.Take(Path);
        try
        {
            _writer = Open(fingerprint, labels, out var resumed);
            Resumed = resumed;
        }
        catch
        {
            _lock.Dispose();
            throw;
        }
    }

    private StreamWriter Open(RunFingerprint fingerprint, IReadOnlyList<string> labels, out IReadOnlyList<CheckpointRecord> resumed)
    {
        resumed = [];
        if (File.Exists(Path!) && Read(Path!, fingerprint, labels) is { } records) resumed = records;
        else
        {
            // No file, or one whose header write was torn (nothing after it can exist): start it.
            var header = new JsonObject
            {
                [Magic] = 1, ["fingerprint"] = fingerprint.Hash, ["labels"] = new JsonArray(labels.Select(l => (JsonNode)l).ToArray()),
                ["settings"] = fingerprint.Settings.DeepClone(),
            };
            AtomicFile.WriteAllText(Path!, header.ToJsonString() + "\n");
        }
        return new StreamWriter(new FileStream(Path!, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));
    }

    /// <summary>Full path, or null without a checkpoint.</summary>
    public string? Path { get; }
    /// <summary>Records of earlier runs, in order.</summary>
    public IReadOnlyList<CheckpointRecord> Resumed { get; } = [];

    /// <summary>Appends one record (the caller serialises calls).</summary>
    public void Append(CheckpointRecord r)
    {
        if (_writer is null) return;
        var line = r.Failed ? new JsonObject { ["label"] = r.Label, ["failed"] = true, ["tokens"] = r.Tokens } : new JsonObject
        {
            ["label"] = r.Label, ["text"] = r.Text, ["text2"] = r.Text2,
            ["soft_label"] = r.SoftLabel is null ? null : new JsonArray(r.SoftLabel.Select(p => (JsonNode)p).ToArray()),
            ["source"] = r.Source, ["dropped"] = r.Dropped?.ToString(), ["tokens"] = r.Tokens,
        };
        _writer.Write(line.ToJsonString() + "\n");
        _writer.Flush();
    }

    private static List<CheckpointRecord>? Read(string path, RunFingerprint fingerprint, IReadOnlyList<string> labels)
    {
        var bytes = File.ReadAllBytes(path);
        var records = new List<CheckpointRecord>();
        int start = 0, lineNumber = 0;
        while (start < bytes.Length)
        {
            int end = Array.IndexOf(bytes, (byte)'\n', start);
            lineNumber++;
            if (end < 0)
            {
                // One line without a line end that is not the start of this format's header is another file (a settings
                // JSON, a note): cutting it as a torn line would destroy it. The header is written whole (temp file and
                // rename), so only a file written before that can hold a torn one.
                if (lineNumber == 1 && !StartsLikeTheHeader(bytes))
                    throw new InvalidDataException($"{path} line 1: not a black-box extraction checkpoint (no '{Magic}' header); give this run another CheckpointPath.");
                // A torn last line: the write was interrupted; what it held was in flight, so it is dropped.
                using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) f.SetLength(start);
                break;
            }
            string text;
            try { text = Utf8.GetString(bytes, start, end - start); }
            catch (DecoderFallbackException e)
            {
                throw new InvalidDataException($"{path} line {lineNumber}: not a checkpoint record (expected UTF-8 text, found byte 0x{(e.BytesUnknown is { Length: > 0 } b ? b[0] : 0):X2}).", e);
            }
            start = end + 1;
            JsonObject node;
            try { node = JsonNode.Parse(text) as JsonObject ?? throw new JsonException("not an object"); }
            catch (JsonException e) { throw new InvalidDataException($"{path} line {lineNumber}: not a checkpoint record ({e.Message}).", e); }
            if (lineNumber == 1)
            {
                if (node[Magic] is null) throw new InvalidDataException($"{path} line 1: not a black-box extraction checkpoint (no '{Magic}' header).");
                var found = node["fingerprint"]?.GetValue<string>();
                if (found != fingerprint.Hash)
                    throw new InvalidOperationException($"{path} line 1: the checkpoint was written by a run with other settings ({(node["settings"] is JsonObject settings ? SettingDifferences.Describe(settings, fingerprint.Settings) : null) ?? $"fingerprint {found}, this run {fingerprint.Hash}"}); " +
                        "use the same settings to resume, or another CheckpointPath.");
                continue;
            }
            try
            {
                int label = node["label"]?.GetValue<int>() ?? throw new InvalidDataException("field 'label' is missing");
                if (label < 0 || label >= labels.Count) throw new InvalidDataException($"label index {label} is outside [0, {labels.Count})");
                if (node["failed"]?.GetValue<bool>() == true)
                {
                    records.Add(CheckpointRecord.FailedRequest(label, node["tokens"]?.GetValue<long>() ?? 0));
                    continue;
                }
                DropReason? dropped = node["dropped"]?.GetValue<string>() is { } d
                    ? Enum.TryParse<DropReason>(d, out var reason) && Enum.IsDefined(reason) ? reason
                        : throw new InvalidDataException($"'dropped' is '{d}', not one of [{string.Join(", ", Enum.GetNames<DropReason>())}]")
                    : null;
                var soft = (node["soft_label"] as JsonArray)?.Select(v => v?.GetValue<float>() ?? throw new InvalidDataException("'soft_label' holds null")).ToArray();
                if (dropped is null && soft?.Length != labels.Count)
                    throw new InvalidDataException($"a kept sample needs a soft label of {labels.Count} values, found {soft?.Length.ToString() ?? "none"}");
                // Replayed as it stood, it failed only in the store's constructor, by an index of the store.
                if (soft is not null && KnowledgeStore.SoftLabelError(soft, labels.Count) is { } error) throw new InvalidDataException(error);
                var sample = node["text"]?.GetValue<string>() ?? throw new InvalidDataException("field 'text' is missing");
                records.Add(new CheckpointRecord(label, sample, node["text2"]?.GetValue<string>(), soft,
                    node["source"]?.GetValue<string>(), dropped, node["tokens"]?.GetValue<long>() ?? 0));
            }
            // InvalidOperationException, FormatException: a field of the wrong JSON type (GetValue).
            catch (Exception e) when (e is InvalidDataException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"{path} line {lineNumber}: not a checkpoint record ({e.Message}).", e);
            }
        }
        return lineNumber <= 1 && records.Count == 0 && new FileInfo(path).Length == 0 ? null : records;
    }

    /// <summary>Whether the file's bytes begin as a header does (or are a prefix of how one begins).</summary>
    private static bool StartsLikeTheHeader(byte[] bytes)
    {
        var start = Encoding.UTF8.GetBytes($"{{\"{Magic}\":");
        int n = Math.Min(start.Length, bytes.Length);
        return bytes.AsSpan(0, n).SequenceEqual(start.AsSpan(0, n));
    }

    public void Dispose()
    {
        _writer?.Dispose();
        _lock?.Dispose();
    }
}
