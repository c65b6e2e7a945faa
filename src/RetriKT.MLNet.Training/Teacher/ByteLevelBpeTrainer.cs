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
/// by frequency, merge the most frequent, ties broken by the ordinal order of the pair), with the pair counts updated
/// after each merge only in the words that held the merged pair rather than recounted over the whole corpus.
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
    /// <paramref name="cancellation"/> is cancelled, before anything is written.
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
        // Symbols are interned: an id per distinct string, so a merge whose result spells an existing symbol (ab + c
        // and a + bc) gives the same symbol, as string symbols would.
        var symbolText = new List<string>();
        var symbolId = new Dictionary<string, int>(StringComparer.Ordinal);
        int Intern(string symbol)
        {
            if (!symbolId.TryGetValue(symbol, out var id)) { id = symbolText.Count; symbolId[symbol] = id; symbolText.Add(symbol); }
            return id;
        }
        var words = new List<int[]>(wordCounts.Count);
        var counts = new List<int>(wordCounts.Count);
        foreach (var (word, count) in wordCounts)
        {
            var symbols = new int[word.Length];
            for (int i = 0; i < word.Length; i++) symbols[i] = Intern(word[i].ToString()); // the byte alphabet is all BMP, one char per byte
            words.Add(symbols);
            counts.Add(count);
        }

        // Pair counts are kept up to date across merges (only the words holding the merged pair change), with the words
        // each pair occurs in; the ranking orders pairs as the full recount did: most frequent first, ties by the
        // ordinal order of the left then the right symbol.
        var pairCounts = new Dictionary<long, int>();
        var pairWords = new Dictionary<long, HashSet<int>>();
        var ranking = new SortedSet<(int Count, int Left, int Right)>(Comparer<(int Count, int Left, int Right)>.Create((x, y) =>
        {
            int order = y.Count.CompareTo(x.Count);
            if (order == 0) order = string.CompareOrdinal(symbolText[x.Left], symbolText[y.Left]);
            if (order == 0) order = string.CompareOrdinal(symbolText[x.Right], symbolText[y.Right]);
            return order;
        }));
        static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;
        for (int w = 0; w < words.Count; w++)
            for (int i = 0; i + 1 < words[w].Length; i++)
            {
                var key = PairKey(words[w][i], words[w][i + 1]);
                pairCounts[key] = pairCounts.GetValueOrDefault(key) + counts[w];
                if (!pairWords.TryGetValue(key, out var holders)) pairWords[key] = holders = [];
                holders.Add(w);
            }
        foreach (var (key, count) in pairCounts) ranking.Add((count, (int)(key >> 32), (int)key));

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) vocab[alphabet[b]] = b;
        var merges = new List<string>();
        int mergesWanted = vocabSize - 1 - vocab.Count;
        var deltas = new Dictionary<long, int>();
        var rebuilt = new List<int>();
        while (vocab.Count < vocabSize - 1)
        {
            cancellation.ThrowIfCancellationRequested();
            if (ranking.Count == 0) break;
            var best = ranking.Min;
            if (best.Count < minPairFrequency) break;
            var (left, right) = (symbolText[best.Left], symbolText[best.Right]);
            var merged = left + right;
            int mergedId = Intern(merged);
            merges.Add(left + " " + right);
            vocab.TryAdd(merged, vocab.Count);

            deltas.Clear();
            foreach (int w in pairWords[PairKey(best.Left, best.Right)].ToList())
            {
                var symbols = words[w];
                // Left to right, each occurrence merged once (a a a → aa a), as the recounting loop did.
                rebuilt.Clear();
                for (int i = 0; i < symbols.Length; i++)
                    if (i + 1 < symbols.Length && symbols[i] == best.Left && symbols[i + 1] == best.Right) { rebuilt.Add(mergedId); i++; }
                    else rebuilt.Add(symbols[i]);
                if (rebuilt.Count == symbols.Length) continue; // a word that no longer holds the pair (the index is not pruned)
                for (int i = 0; i + 1 < symbols.Length; i++)
                {
                    var key = PairKey(symbols[i], symbols[i + 1]);
                    deltas[key] = deltas.GetValueOrDefault(key) - counts[w];
                }
                var replaced = rebuilt.ToArray();
                words[w] = replaced;
                for (int i = 0; i + 1 < replaced.Length; i++)
                {
                    var key = PairKey(replaced[i], replaced[i + 1]);
                    deltas[key] = deltas.GetValueOrDefault(key) + counts[w];
                    if (!pairWords.TryGetValue(key, out var holders)) pairWords[key] = holders = [];
                    holders.Add(w);
                }
            }
            foreach (var (key, delta) in deltas)
            {
                if (delta == 0) continue;
                int before = pairCounts.GetValueOrDefault(key), after = before + delta;
                var (l, r) = ((int)(key >> 32), (int)key);
                if (before > 0) ranking.Remove((before, l, r));
                if (after > 0) { pairCounts[key] = after; ranking.Add((after, l, r)); }
                else { pairCounts.Remove(key); pairWords.Remove(key); }
            }
            progress?.Report(new TrainingProgress("Tokenizer", merges.Count, mergesWanted, new Dictionary<string, double> { ["pairCount"] = best.Count }));
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
}
