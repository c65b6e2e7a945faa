using System.Text;
using System.Text.Json;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// Trains a small GPT-2-style byte-level BPE tokenizer for a teacher built from scratch (Microsoft.ML.Tokenizers can
/// apply BPE but not train it). The output is a standard <c>vocab.json</c> + <c>merges.txt</c> pair, so the result
/// is loaded by the same Microsoft.ML.Tokenizers path as GPT-2 and saved with the checkpoint. Byte-level means no
/// unknown tokens: every string encodes. Ids 0–255 are the bytes, then merges in order, then <c>&lt;|endoftext|&gt;</c>
/// (used as BOS, EOS and padding). Training is the classic greedy loop (count adjacent pairs over unique words weighted
/// by frequency, merge the most frequent, ties broken by the ordinal order of the pair), which is fast enough for the
/// vocabulary sizes a from-scratch teacher on this box wants (a few thousand).
/// </summary>
public static class ByteLevelBpeTrainer
{
    /// <summary>GPT-2's reversible byte → printable character map.</summary>
    internal static string[] ByteAlphabet()
    {
        var map = new string[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? ((char)b).ToString() : ((char)(256 + extra++)).ToString();
        }
        return map;
    }

    /// <summary>
    /// Learns merges from <paramref name="texts"/> until the vocabulary has <paramref name="vocabSize"/> entries
    /// (or no pair occurs at least <paramref name="minPairFrequency"/> times), writes <c>vocab.json</c> and
    /// <c>merges.txt</c> into <paramref name="outputDirectory"/> and returns the loaded tokenizer.
    /// </summary>
    public static TeacherTokenizer Train(IEnumerable<string> texts, int vocabSize, string outputDirectory, int minPairFrequency = 2)
        => Train(texts, vocabSize, outputDirectory, minPairFrequency, progress: null, CancellationToken.None);

    /// <summary>
    /// As <see cref="Train(IEnumerable{string}, int, string, int)"/>, reporting each merge learned to
    /// <paramref name="progress"/> (stage "Tokenizer", step = merges so far of at most <c>vocabSize - 257</c>, metric
    /// "pairCount" = the merged pair's frequency) and stopping with <see cref="OperationCanceledException"/> when
    /// <paramref name="cancellation"/> is cancelled, before anything is written. Each merge recounts the pairs of the
    /// whole corpus: a 2,048-token vocabulary on 4,000 Wikipedia paragraphs (2 MB) took 93 s on the 2-core box.
    /// </summary>
    public static TeacherTokenizer Train(IEnumerable<string> texts, int vocabSize, string outputDirectory, int minPairFrequency,
        IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        if (vocabSize < 257) throw new ArgumentOutOfRangeException(nameof(vocabSize), $"vocabSize must be at least 257 (256 bytes + <|endoftext|>), found {vocabSize}.");
        var alphabet = ByteAlphabet();

        var wordCounts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var text in texts)
        {
            cancellation.ThrowIfCancellationRequested();
            if (string.IsNullOrEmpty(text)) continue;
            // The split the loaded tokenizer encodes with (FromGpt2Files), so the merges are learned on the pieces it sees.
            foreach (var piece in HfPreTokenizer.Gpt2.Split(text))
            {
                var word = string.Concat(Encoding.UTF8.GetBytes(piece).Select(b => alphabet[b]));
                wordCounts[word] = wordCounts.GetValueOrDefault(word) + 1;
            }
        }
        var words = wordCounts.Select(kv => (Symbols: SplitSymbols(kv.Key), Count: kv.Value)).ToList();

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) vocab[alphabet[b]] = b;
        var merges = new List<string>();
        int mergesWanted = vocabSize - 1 - vocab.Count;
        while (vocab.Count < vocabSize - 1)
        {
            cancellation.ThrowIfCancellationRequested();
            var pairs = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var key = (symbols[i], symbols[i + 1]);
                    pairs[key] = pairs.GetValueOrDefault(key) + count;
                }
            if (pairs.Count == 0) break;
            var best = pairs.OrderByDescending(kv => kv.Value)
                .ThenBy(kv => kv.Key.Item1, StringComparer.Ordinal).ThenBy(kv => kv.Key.Item2, StringComparer.Ordinal).First();
            if (best.Value < minPairFrequency) break;
            var (left, right) = best.Key;
            var merged = left + right;
            merges.Add(left + " " + right);
            vocab.TryAdd(merged, vocab.Count);
            foreach (var (symbols, _) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == left && symbols[i + 1] == right) { symbols[i] = merged; symbols.RemoveAt(i + 1); }
            progress?.Report(new TrainingProgress("Tokenizer", merges.Count, mergesWanted, new Dictionary<string, double> { ["pairCount"] = best.Value }));
        }
        cancellation.ThrowIfCancellationRequested();
        vocab["<|endoftext|>"] = vocab.Count;

        Directory.CreateDirectory(outputDirectory);
        var vocabPath = Path.Combine(outputDirectory, "vocab.json");
        var mergesPath = Path.Combine(outputDirectory, "merges.txt");
        AtomicFile.WriteAllText(vocabPath, JsonSerializer.Serialize(vocab));
        AtomicFile.WriteAllText(mergesPath, "#version: 0.2\n" + string.Join("\n", merges) + (merges.Count > 0 ? "\n" : ""));
        return TeacherTokenizer.FromGpt2Files(vocabPath, mergesPath);
    }

    private static List<string> SplitSymbols(string word)
    {
        var list = new List<string>(word.Length);
        for (int i = 0; i < word.Length; i++) list.Add(word[i].ToString()); // the byte alphabet is all BMP, one char per byte
        return list;
    }
}
