using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// Lower-casing as BERT's reference tokenizers do it (Python <c>str.lower</c>, Rust <c>char::to_lowercase</c>): full
/// Unicode case mapping. The one character whose full lower case differs from .NET's <c>ToLowerInvariant</c> after
/// accent stripping is U+0130 'İ' (→ "i" + U+0307, then "i"); .NET leaves it upper case, and the word became [UNK].
/// </summary>
public class WordPieceLowercasingTests
{
    [SharedDataFact]
    public void DottedCapitalIIsLowercasedAsTheReferenceDoes()
    {
        var vocabulary = WordPieceVocabulary.Load(SharedData.Path("models", "bert-base-uncased-vocab", "vocab.txt"));
        // The reference (HF BasicTokenizer + WordPiece, fast or slow): "istanbul diyarbakir" → is ##tan ##bul di ##yar ##bak ##ir.
        int[] expected = [9960, 4487, 13380, 3676, 23630];
        Assert.Equal(expected, vocabulary.Encode("istanbul diyarbakir"));
        Assert.Equal(expected, vocabulary.Encode("İstanbul DİYARBAKIR"));
        Assert.DoesNotContain(vocabulary.UnknownId, vocabulary.Encode("İzmir"));
    }
}
