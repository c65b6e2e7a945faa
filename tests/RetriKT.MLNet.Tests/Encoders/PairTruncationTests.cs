using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// Longest-first truncation of a text pair as BERT's reference (<c>_truncate_seq_pair</c>, and HF's slow tokenizers'
/// <c>longest_first</c>) does it: one token at a time from the longer text, and from the SECOND text when both are as
/// long. HF's fast (Rust) tokenizers differ where both texts are longer than half the budget: they keep
/// floor(budget / 2) of the text that is not longer (the first on a tie) and fill the rest with the other (their
/// <c>truncate_encodings_longest_first</c> test: budget 7, 4 + 4 tokens → 3 + 4, where the reference keeps 4 + 3).
/// </summary>
public class PairTruncationTests
{
    [SharedDataFact]
    public void TiesAreCutFromTheSecondTextAsTheReferenceDoes()
    {
        var encoder = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM, new ManagedBertSentenceEncoder.Options { MaxTokens = 12 });
        string a = string.Join(" ", Enumerable.Repeat("cat", 10)), b = string.Join(" ", Enumerable.Repeat("dog", 10));
        Assert.Equal(10, encoder.Vocabulary.Encode(a).Count);
        Assert.Equal(10, encoder.Vocabulary.Encode(b).Count);
        // Budget 12 - 3 = 9 tokens: the reference keeps 5 of a and 4 of b.
        var ids = encoder.Tokenize(a, b);
        Assert.Equal(12, ids.Length);
        int sep = Array.IndexOf(ids, encoder.Vocabulary.SepId);
        Assert.Equal(encoder.Vocabulary.Encode(a).Take(5), ids[1..sep]);
        Assert.Equal(encoder.Vocabulary.Encode(b).Take(4), ids[(sep + 1)..^1]);
    }
}
